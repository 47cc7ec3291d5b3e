"""``kfp-finetune doctor``: checks the environment before a run, and says what is wrong.

Each check returns a ``Check`` (name, status, detail). Statuses:

* ``ok``: fine;
* ``fail``: a check that was asked for failed (the command exits 1);
* ``warn``: a check nobody asked for found something a run may trip on (exit status unchanged);
* ``skip``: not asked for and not applicable here.

What is checked, and when a failure counts ("asked for"):

==============  =====================================================  =========================
check           what                                                   asked for
==============  =====================================================  =========================
``python``      this Python against the project's ``Requires-Python``  always
``libraries``   every installed dependency against its pin             always
``gpu``         GPUs TensorFlow sees, and the CUDA libraries it opens  ``--gpus N`` (N >= 1)
                (``components.accelerators``)
``docker``      the Docker daemon (``DOCKER_HOST``), for               ``--docker``
                ``run-local --runner docker``
``kfp``         the KFP API's health call ``GET /apis/v2beta1/healthz``  ``--host URL``
``gcs``         credentials, and a bucket's objects can be listed      ``--registry-uri gs://...``
                (``STORAGE_EMULATOR_HOST`` honoured)
``disk``        free space under the pipeline root                      always (``--min-free-gb``)
==============  =====================================================  =========================

Without ``--gpus``, ``--docker``, ``--host`` or a ``gs://`` registry those checks still report
what they see (``ok`` or ``warn``), except ``kfp`` and ``gcs``, which need a target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

from pipelines import errors
from pipelines.kfp_api import host_url

DISTRIBUTION = "kfp-finetune"
HEALTH_PATH = "/apis/v2beta1/healthz"
DEFAULT_MIN_FREE_GB = 1.0
DEFAULT_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome.

    Attributes:
        name: ``python``, ``libraries``, ``gpu``, ``docker``, ``kfp``, ``gcs`` or ``disk``.
        status: ``ok``, ``fail``, ``warn`` or ``skip`` (see the module docstring).
        detail: One line saying what was found (and, when not ok, what to do).
        data: The measured values, for ``--json``.
    """

    name: str
    status: str
    detail: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def _outcome(name: str, good: bool, asked: bool, detail: str, **data: Any) -> Check:
    return Check(name, "ok" if good else ("fail" if asked else "warn"), detail, data)


def _requirements() -> tuple[str | None, list[str], str]:
    """``(Requires-Python, unconditional requirements, where they were read)``.

    From the source tree's ``pyproject.toml`` when this package sits in one (an editable
    install's metadata is as old as its last ``pip install``, the file is what the pins are now;
    read with ``tomllib``, Python >= 3.11), else from the installed distribution's metadata.
    """
    from importlib import metadata

    pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    if os.path.isfile(pyproject) and sys.version_info >= (3, 11):
        import tomllib

        with open(pyproject, "rb") as f:
            project = tomllib.load(f).get("project", {})
        if project.get("name") == DISTRIBUTION:
            return project.get("requires-python"), list(project.get("dependencies", [])), pyproject
    try:
        meta = metadata.metadata(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None, [], "nowhere"
    requires = [r for r in (meta.get_all("Requires-Dist") or []) if "extra ==" not in r]
    return meta.get("Requires-Python"), requires, f"the installed {DISTRIBUTION} {meta.get('Version')}"


def check_python(requires_python: str | None, version: str | None = None) -> Check:
    """This interpreter's version against ``requires_python`` (a PEP 440 specifier set).

    Args:
        requires_python: e.g. ``">=3.10,<3.14"``; None when the project is not installed.
        version: The version to judge; default this interpreter's ``major.minor.micro``.
    """
    from packaging.specifiers import SpecifierSet

    version = version or ".".join(map(str, sys.version_info[:3]))
    if requires_python is None:
        return Check("python", "fail", f"Python {version}; {DISTRIBUTION} is not installed (pip install -e .)",
                     {"version": version})
    good = version in SpecifierSet(requires_python)
    detail = f"Python {version} (requires {requires_python})" + ("" if good else
                                                                  ": use a Python in that range (3.10-3.13 have wheels for every pin)")
    return _outcome("python", good, True, detail, version=version, requires=requires_python)


def check_libraries(
    requirements: Sequence[str], installed: Callable[[str], str | None] | None = None, source: str = "the pins"
) -> Check:
    """Every requirement against the installed version.

    Args:
        requirements: PEP 508 strings (``"tensorflow==2.21.0"``); markers that do not apply here
            are skipped.
        installed: ``name -> version or None``; default ``importlib.metadata.version``.
        source: Where the requirements were read, for the detail line.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    def found(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    installed = installed or found
    versions, problems = {}, []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installed(requirement.name)
        versions[requirement.name] = version
        if version is None:
            problems.append(f"{requirement.name} missing (wants {requirement.specifier})")
        elif requirement.specifier and version not in requirement.specifier:
            problems.append(f"{requirement.name} {version} (wants {requirement.specifier})")
    pins = ", ".join(f"{n} {versions[n]}" for n in ("kfp", "tensorflow", "tensorflow-transform", "keras") if versions.get(n))
    if problems:
        detail = f"{len(problems)} of {len(versions)} not as pinned in {source}: {'; '.join(problems)} (pip install -e . fixes them)"
    else:
        detail = f"all {len(versions)} as pinned in {source}" + (f" ({pins})" if pins else "")
    return _outcome("libraries", not problems, True, detail, versions=versions, problems=problems, source=source)


def check_gpu(wanted: int) -> Check:
    """GPUs TensorFlow sees, and whether the CUDA libraries it opens load (no GPU needed).

    Args:
        wanted: GPUs a run will ask for (``accelerator_count``); >= 1 makes a shortfall a
            failure, explained as a step would explain it (``require_accelerators``).
    """
    from components import accelerators
    from components.step_logging import quiet_tensorflow

    # As a step that asked for no GPU: on a machine without the NVIDIA driver TensorFlow's CUDA
    # probe logs "E ... failed call to cuInit" whatever was asked, and this check says it better.
    quiet_tensorflow("doctor", 0)
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    report = accelerators.check_cuda_libraries(tf.sysconfig.get_build_info())
    loaded = sum(1 for status in report.libraries if status.path)
    data = {"gpus": gpus, "cuda_libraries_loaded": loaded, "cuda": report.to_dict()}
    libraries = (f"no CUDA library loads (TensorFlow without tensorflow[and-cuda])" if report.verdict.kind == "no_cuda_libraries"
                 else f"{loaded} of {len(report.libraries)} CUDA libraries load ({report.verdict.message})")
    if wanted:
        try:
            accelerators.require_accelerators(wanted, "nvidia.com/gpu")
        except accelerators.AcceleratorNotFoundError as e:
            return Check("gpu", "fail", " ".join(str(e).split()), data)
    if gpus:
        return Check("gpu", "ok", f"{len(gpus)} GPU(s) visible ({', '.join(gpus)}); {libraries}", data)
    return Check("gpu", "warn", f"no GPU visible: training runs on the CPU; {libraries}", data)


def check_docker(asked: bool) -> Check:
    """Whether a Docker daemon answers (``DOCKER_HOST``, else the default socket)."""
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        import docker

        client = docker.from_env(timeout=int(DEFAULT_TIMEOUT_S))
        try:
            client.ping()
            version = client.version()
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 (the Docker SDK raises several unrelated types for "no daemon")
        return _outcome("docker", False, asked, f"no Docker daemon answers at {where} ({type(e).__name__}); "
                                                "start dockerd, or run without --runner docker", endpoint=where)
    return Check("docker", "ok", f"Docker {version.get('Version')} answers at {where}",
                 {"endpoint": where, "version": version.get("Version")})


def check_kfp(host: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Check:
    """The KFP API's health call, ``GET <host>/apis/v2beta1/healthz``.

    Args:
        host: The API's base URL, e.g. ``http://localhost:8080``.
        token: A bearer token (``KFP_TOKEN``), or None.
        timeout: Seconds to wait.
    """
    url = host.rstrip("/") + HEALTH_PATH
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
            status = response.status
    except urllib.error.HTTPError as e:
        return Check("kfp", "fail", f"{url} answered {e.code} {e.reason}", {"url": url, "status": e.code})
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return Check("kfp", "fail", f"cannot reach {url}: {reason}", {"url": url, "reachable": False})
    seconds = time.perf_counter() - started
    try:
        health = json.loads(body) if body.strip() else {}
    except json.JSONDecodeError:
        return Check("kfp", "fail", f"{url} answered {status} but not JSON: {body[:100]!r} (is this a KFP API?)", {"url": url})
    version = health.get("commit_sha") or health.get("tag_name") or ""
    return Check("kfp", "ok", f"{url} answered {status} in {seconds:.2f} s" + (f" ({version})" if version else ""),
                 {"url": url, "status": status, "health": health})


def check_gcs(uri: str) -> Check:
    """Credentials, and whether the objects under a ``gs://bucket/prefix`` can be listed.

    ``STORAGE_EMULATOR_HOST`` set: the emulator is used with anonymous credentials (as every
    step does, ``components.storage.gcs_client``).
    """
    from components.storage import gcs_client, split_gcs_uri

    bucket, prefix = split_gcs_uri(uri)
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        who = f"anonymous credentials on the emulator {emulator}"
    else:
        import google.auth
        import google.auth.exceptions

        try:
            credentials, project = google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError as e:
            return Check("gcs", "fail", f"no Google Cloud credentials for {uri}: {e}", {"uri": uri})
        who = f"{type(credentials).__name__} credentials (project {project or 'unset'})"
    try:
        client = gcs_client()
        if not client.bucket(bucket).exists():
            return Check("gcs", "fail", f"bucket {bucket!r} of {uri} does not exist or is not visible to {who}", {"uri": uri})
        listed = sum(1 for _ in client.list_blobs(bucket, prefix=prefix, max_results=1))
    except Exception as e:  # noqa: BLE001 (google-api-core's errors and transport errors alike mean "no access")
        return Check("gcs", "fail", f"cannot list {uri} with {who}: {type(e).__name__}: {e}", {"uri": uri})
    state = "has objects" if listed else "is empty (the first push creates it)"
    return Check("gcs", "ok", f"{uri} {state}; listed with {who}", {"uri": uri, "bucket": bucket})


def check_disk(pipeline_root: str, min_free_gb: float) -> Check:
    """Free space on the file system that holds (or will hold) the pipeline root."""
    path = os.path.abspath(pipeline_root)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free_gb = shutil.disk_usage(path).free / 1e9
    good = free_gb >= min_free_gb
    where = os.path.abspath(pipeline_root)
    if path != where:
        where += f" (not there yet: measured on {path}, the nearest folder that exists)"
    detail = f"{free_gb:.1f} GB free under {where} (at least {min_free_gb:g} GB wanted)"
    return _outcome("disk", good, True, detail if good else detail + ": free some space or choose another --pipeline-root",
                    free_gb=round(free_gb, 2), path=path)


def _gpu_count(text: str) -> int:
    """``--gpus``: the GPUs a run will ask for, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected the number of GPUs a run will ask for, an integer >= 0; got {text!r}")
    return value


def run_checks(args: argparse.Namespace) -> list[Check]:
    """Every check, in the module docstring's order, for the parsed ``doctor`` arguments."""
    requires_python, requirements, source = _requirements()
    checks = [check_python(requires_python), check_libraries(requirements, source=source)]
    checks.append(check_gpu(args.gpus))
    checks.append(check_docker(args.docker))
    checks.append(check_kfp(args.host, args.existing_token or os.environ.get("KFP_TOKEN")) if args.host
                  else Check("kfp", "skip", "no --host given"))
    registry = args.registry_uri or ""
    checks.append(check_gcs(registry) if registry.startswith("gs://")
                  else Check("gcs", "skip", "no gs:// --registry-uri given"))
    checks.append(check_disk(args.pipeline_root, args.min_free_gb))
    return checks


@errors.command
def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    failed = [c.name for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not failed, "failed": failed, "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{c.status:<5} {c.name:<10} {c.detail}")
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "\nall checks asked for passed")
    return 1 if failed else 0


def add_parser(sub: Any, default_pipeline_root: str) -> None:
    """Adds the ``doctor`` command to the CLI's subparsers."""
    p = sub.add_parser("doctor", help="check Python, libraries, GPUs, Docker, a KFP host, GCS access and disk before a run")
    p.add_argument("--gpus", type=_gpu_count, default=0, metavar="N", help="fail unless TensorFlow sees at least N GPUs (default: report only)")
    p.add_argument("--docker", action="store_true", help="fail unless a Docker daemon answers (for run-local --runner docker)")
    p.add_argument("--host", metavar="URL", type=host_url, help="a KFP API to reach with its health call (e.g. http://localhost:8080)")
    p.add_argument("--existing-token", metavar="TOKEN", help="bearer token for --host (default: $KFP_TOKEN)")
    p.add_argument("--registry-uri", metavar="URI", help="a gs://bucket/prefix whose credentials and access to check")
    p.add_argument("--pipeline-root", default=default_pipeline_root, metavar="DIR",
                   help="where run-local writes (free disk is checked there; default: %(default)s)")
    p.add_argument("--min-free-gb", type=float, default=DEFAULT_MIN_FREE_GB, metavar="GB",
                   help="fail below this much free disk under the pipeline root (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=_doctor)
