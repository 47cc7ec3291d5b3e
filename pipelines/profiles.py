"""Cluster profiles: the Kubernetes settings of one target cluster, read from a YAML file.

A profile holds what the pipeline function must not: the component images and how they are
pulled, each step's CPU and memory, where the finetune step runs and on how many GPUs, which
volume claims are mounted where, how steps reach GCS, retries and timeouts, the pipeline root
and the run's service account. ``pipelines.profile_apply`` applies it to the pipeline's tasks
when compiling (``kfp-finetune compile --profile``). Three examples ship in the package
(``kind``, ``gke``, ``eks``: ``pipelines/cluster_profiles/*.yaml``); any other value is a
file path, so a user's own profile works the same way.

Every value is checked on load, and a refused one names the file and the key path, e.g.
``profile kind.yaml: steps.finetune.resources.memory_limit: ...``: unknown keys, wrong types,
Kubernetes quantities and names, and a secret *value* (a JSON key, a PEM block) written where
the *name* of a Kubernetes object belongs, whose text is never echoed.
"""

from __future__ import annotations

import dataclasses
import decimal
import importlib.resources
import os
import re
import types
from collections.abc import Mapping
from typing import Any, Callable

import yaml

# Profile step names; the KFP task of each is named alike ("skip_push": task "skip-push").
STEPS = ("preprocess", "finetune", "evaluate", "push", "skip_push")
# The steps that read or write data, the backbone, checkpoints and the registry: the default
# steps of a volume and the steps that get GCS credentials.
STORAGE_STEPS = ("preprocess", "finetune", "evaluate", "push")
SHIPPED_PROFILES = ("eks", "gke", "kind")
GCS_MODES = ("none", "workload_identity", "secret")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")

# Kubernetes' quantity grammar (k8s.io/apimachinery resource.Quantity: signed number, then a
# binary-SI, decimal-SI or exponent suffix).
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
# What kfp 2.17.3's PipelineTask.set_cpu_*/set_memory_* accept (narrower: no exponents, no
# fractional memory). Its "K" suffix is not a Kubernetes quantity, hence left out here.
_KFP_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_KFP_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|Ki)?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": decimal.Decimal("1e-9"),
           "u": decimal.Decimal("1e-6"), "m": decimal.Decimal("1e-3"), "k": 10**3, "M": 10**6, "G": 10**9,
           "T": 10**12, "P": 10**15, "E": 10**18}
# RFC 1123 subdomain: the names of Secrets, PersistentVolumeClaims and ServiceAccounts.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_IMAGE = re.compile(r"^([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_ACCELERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class ProfileError(ValueError):
    """A profile that cannot be used: ``profile <file>: <key path>: <what is wrong, what is expected>``."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory of a step's container, as Kubernetes quantities (``"500m"``, ``"4Gi"``);
    None: not set. Compiled into ``deploymentSpec.executors.<exec>.container.resources``."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None


@dataclasses.dataclass(frozen=True)
class Retry:
    """KFP's retry policy (``PipelineTask.set_retry``); the defaults are KFP's own (kfp 2.17.3
    ``RetryPolicy.to_proto``). Durations are ``<integer><s|m|h|d|w>``. The n-th retry waits
    ``backoff_duration * backoff_factor ** (n - 1)``, at most ``backoff_max_duration``."""

    num_retries: int
    backoff_duration: str = "0s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclasses.dataclass(frozen=True)
class Toleration:
    """One Kubernetes toleration (``kfp.kubernetes.add_toleration``)."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """The finetune step's accelerator: resource ``type`` (e.g. ``nvidia.com/gpu``), ``count`` >= 1."""

    type: str
    count: int


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What a profile sets on one step. ``node_selector`` and ``env`` map names to values;
    ``timeout_seconds`` becomes the pod's ``activeDeadlineSeconds``; ``accelerator`` is only
    taken by the finetune step."""

    resources: Resources = Resources()
    timeout_seconds: int | None = None
    retry: Retry | None = None
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    tolerations: tuple[Toleration, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    accelerator: Accelerator | None = None


@dataclasses.dataclass(frozen=True)
class VolumeMount:
    """A PersistentVolumeClaim ``claim`` mounted at ``mount_path`` in each of ``steps``."""

    claim: str
    mount_path: str
    steps: tuple[str, ...] = STORAGE_STEPS


@dataclasses.dataclass(frozen=True)
class GcsCredentials:
    """How steps reach GCS. ``none``: nothing set (public data, or no GCS). ``workload_identity``:
    nothing in the pods; the run's Kubernetes service account (``Profile.service_account``) is
    bound to a Google service account. ``secret``: the Secret ``secret_name`` is mounted at
    ``mount_path`` and ``GOOGLE_APPLICATION_CREDENTIALS`` names its ``secret_key`` file."""

    mode: str = "none"
    secret_name: str | None = None
    secret_key: str = "key.json"
    mount_path: str = "/var/secrets/google"

    @property
    def key_file(self) -> str | None:
        """The key file's path inside the step containers (``secret`` mode), else None."""
        return f"{self.mount_path.rstrip('/')}/{self.secret_key}" if self.mode == "secret" else None


@dataclasses.dataclass(frozen=True)
class Profile:
    """A loaded, validated cluster profile.

    Attributes:
        name: The shipped profile's name, or the file's name for a user's file.
        source: The file it was read from.
        image: Component image of every step (None: ``components.image.COMPONENT_IMAGE``).
        gpu_image: The finetune step's image when ``steps["finetune"].accelerator`` is set.
        image_pull_secrets: Names of ``kubernetes.io/dockerconfigjson`` Secrets, every step.
        image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never``; None: Kubernetes' default.
        pipeline_root: Where the cluster's runs write artifacts (``gs://``, ``s3://``,
            ``minio://``); None: the KFP deployment's default.
        service_account: The Kubernetes service account runs use (Workload Identity, IRSA);
            None: the deployment's default. Set per run by ``submit``/``schedule``, not compiled.
        gcs_credentials: See ``GcsCredentials``.
        volumes: Volume claims to mount.
        steps: Settings per step name of ``STEPS``; a step not in the file has ``StepSettings()``.
    """

    name: str
    source: str
    image: str | None = None
    gpu_image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str | None = None
    pipeline_root: str | None = None
    service_account: str | None = None
    gcs_credentials: GcsCredentials = GcsCredentials()
    volumes: tuple[VolumeMount, ...] = ()
    steps: Mapping[str, StepSettings] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({s: StepSettings() for s in STEPS}))


def load_profile(path_or_name: str) -> Profile:
    """Reads and checks a profile.

    Args:
        path_or_name: A shipped profile's name (``kind``, ``gke``, ``eks``: a value without
            ``/`` and without a ``.yaml``/``.yml`` suffix), or the path of a YAML file.

    Returns:
        The validated profile.

    Raises:
        FileNotFoundError: neither a shipped name nor an existing file.
        ProfileError: invalid YAML or an invalid value, naming the file and the key path.
    """
    if "/" not in path_or_name and os.sep not in path_or_name and not path_or_name.endswith((".yaml", ".yml")):
        if path_or_name not in SHIPPED_PROFILES:
            raise FileNotFoundError(f"profile {path_or_name!r} is not a shipped profile ({', '.join(SHIPPED_PROFILES)}) "
                                    "nor a path; give a file as PATH.yaml or ./NAME")
        resource = importlib.resources.files("pipelines") / "cluster_profiles" / f"{path_or_name}.yaml"
        return parse_profile(resource.read_text(encoding="utf-8"), f"{path_or_name}.yaml", name=path_or_name, source=str(resource))
    if not os.path.isfile(path_or_name):
        raise FileNotFoundError(f"profile file {path_or_name!r} does not exist")
    with open(path_or_name, encoding="utf-8") as f:
        text = f.read()
    label = os.path.basename(path_or_name)
    return parse_profile(text, label, name=os.path.splitext(label)[0], source=os.path.abspath(path_or_name))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, and a second ``steps:`` block would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_profile(text: str, label: str, name: str | None = None, source: str | None = None) -> Profile:
    """Parses and checks a profile's YAML text (see ``load_profile``); ``label`` names it in errors.

    Raises:
        ProfileError: see ``load_profile``.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ProfileError(f"profile {label}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        raise ProfileError(f"profile {label}: the file is empty; see pipelines/cluster_profiles/kind.yaml for the keys")
    try:
        return _profile(data, name or label, source or label)
    except _Invalid as e:
        raise ProfileError(f"profile {label}: {e.path or 'top level'}: {e.problem}") from None


class _Invalid(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def _mapping(value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping with keys {', '.join(allowed)}; got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _Invalid(f"{path}.{key}" if path else str(key), f"unknown key; allowed here: {', '.join(allowed)}")
    for key in required:
        if value.get(key) is None:
            raise _Invalid(f"{path}.{key}" if path else key, "required")
    return value


def _string(value: Any, path: str, check: Callable[[str, str], None] | None = None) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected a string, got {type(value).__name__}")
    if check is not None:
        check(value, path)
    return value


def _integer(value: Any, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(path, f"expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise _Invalid(path, f"must be at least {minimum}, got {value}")
    return value


def _looks_like_secret_value(value: str) -> bool:
    """A JSON key file, a PEM block, a token: what belongs *inside* a Secret, not its name."""
    return ("\n" in value or "{" in value or "}" in value or "-----BEGIN" in value or "private_key" in value
            or len(value) > 253 or (len(value) >= 40 and re.fullmatch(r"[A-Za-z0-9+/=_.-]+", value) is not None
                                    and any(c.isupper() for c in value) and any(c.isdigit() for c in value)))


def _object_name(what: str) -> Callable[[str, str], None]:
    def check(value: str, path: str) -> None:
        if _looks_like_secret_value(value):
            # The value is not echoed: it may be a credential.
            raise _Invalid(path, f"this looks like a secret's value (a key, a PEM block, a token), not the name of a {what}; "
                           "store it in a Kubernetes Secret (kubectl create secret generic NAME --from-file=key.json=FILE) "
                           "and write that NAME here (value not shown)")
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise _Invalid(path, f"{value!r} is not a valid {what} name (RFC 1123 subdomain: lower-case letters, digits, "
                           "'-' and '.', starting and ending with a letter or digit, at most 253 characters)")
    return check


def _label_key(value: str, path: str) -> None:
    prefix, _, name = value.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 or not _LABEL_NAME.match(name):
        raise _Invalid(path, f"{value!r} is not a Kubernetes label key ([PREFIX/]NAME; NAME at most 63 letters, "
                       "digits, '-', '_', '.'; PREFIX a DNS subdomain)")


def _label_value(value: str, path: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise _Invalid(path, f"{value!r} is not a Kubernetes label value (at most 63 letters, digits, '-', '_', '.')")


def _absolute_path(value: str, path: str) -> None:
    if not value.startswith("/") or value == "/" or os.path.normpath(value) != value or ":" in value:
        raise _Invalid(path, f"{value!r} must be a normalized absolute path other than '/' (no '..', no trailing '/', no ':')")


def _image(value: str, path: str) -> None:
    if not _IMAGE.match(value):
        raise _Invalid(path, f"{value!r} is not an image reference (REGISTRY/NAME:TAG or NAME@sha256:DIGEST)")


def quantity_value(text: str) -> decimal.Decimal:
    """The number a Kubernetes quantity stands for (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824).

    Raises:
        ValueError: ``text`` is not a quantity (grammar of k8s.io/apimachinery ``resource.Quantity``).
    """
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = text[: match.start(3)] if match.group(3) else text, match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return decimal.Decimal(number) * decimal.Decimal(10) ** int(suffix[1:])
    return decimal.Decimal(number) * _SUFFIX.get(suffix, 1)


def _quantity(kind: str) -> Callable[[str, str], None]:
    def check(value: str, path: str) -> None:
        try:
            number = quantity_value(value)
        except ValueError:
            example = "500m, 2 or 1.5" if kind == "cpu" else "512Mi, 4Gi or 1G"
            raise _Invalid(path, f"{value!r} is not a Kubernetes quantity (e.g. {example})") from None
        if number < 0:
            raise _Invalid(path, f"{value!r} must not be negative")
        if not (_KFP_CPU if kind == "cpu" else _KFP_MEMORY).match(value):
            allowed = ("a number, or an integer followed by 'm'" if kind == "cpu"
                       else "an integer with an optional suffix E, P, T, G, M, Ei, Pi, Ti, Gi, Mi or Ki (1.5Gi: write 1536Mi)")
            raise _Invalid(path, f"{value!r} is a Kubernetes quantity, but kfp 2.17.3 accepts {kind} only as {allowed}")
    return check


def _duration_seconds(value: str, path: str) -> int:
    match = _DURATION.match(value)
    if not match:
        raise _Invalid(path, f"{value!r} is not a duration: an integer followed by s, m, h, d or w (e.g. 30s, 10m, 1h)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _resources(value: Any, path: str) -> Resources:
    keys = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    data = _mapping(value, path, keys)
    got = {k: _string(str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v, f"{path}.{k}",
                      _quantity(k.split("_")[0])) for k, v in data.items() if v is not None}
    for kind in ("cpu", "memory"):
        request, limit = got.get(f"{kind}_request"), got.get(f"{kind}_limit")
        if request and limit and quantity_value(request) > quantity_value(limit):
            raise _Invalid(f"{path}.{kind}_request", f"{request!r} is more than {kind}_limit {limit!r} (Kubernetes refuses the pod)")
    return Resources(**got)


def _retry(value: Any, path: str) -> Retry:
    data = _mapping(value, path, ("num_retries", "backoff_duration", "backoff_factor", "backoff_max_duration"), ("num_retries",))
    retry = Retry(num_retries=_integer(data["num_retries"], f"{path}.num_retries", 1))
    first = _duration_seconds(_string(data.get("backoff_duration", retry.backoff_duration), f"{path}.backoff_duration"), f"{path}.backoff_duration")
    most = _duration_seconds(_string(data.get("backoff_max_duration", retry.backoff_max_duration), f"{path}.backoff_max_duration"),
                             f"{path}.backoff_max_duration")
    if most < first:
        raise _Invalid(f"{path}.backoff_max_duration", "must not be shorter than backoff_duration")
    factor = data.get("backoff_factor", retry.backoff_factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
        raise _Invalid(f"{path}.backoff_factor", f"expected a number >= 1, got {factor!r}")
    return dataclasses.replace(retry, backoff_duration=data.get("backoff_duration", retry.backoff_duration),
                               backoff_factor=float(factor), backoff_max_duration=data.get("backoff_max_duration", retry.backoff_max_duration))


def _toleration(value: Any, path: str) -> Toleration:
    data = _mapping(value, path, ("key", "operator", "value", "effect", "toleration_seconds"))
    key = _string(data["key"], f"{path}.key", _label_key) if data.get("key") is not None else None
    operator = _string(data.get("operator", "Equal"), f"{path}.operator")
    if operator not in ("Equal", "Exists"):
        raise _Invalid(f"{path}.operator", f"{operator!r} must be Equal or Exists")
    tol_value = _string(data["value"], f"{path}.value", _label_value) if data.get("value") is not None else None
    if operator == "Exists" and tol_value:
        raise _Invalid(f"{path}.value", "must be empty with operator Exists")
    if key is None and operator != "Exists":
        raise _Invalid(f"{path}.key", "required unless operator is Exists (which then tolerates every taint)")
    effect = _string(data["effect"], f"{path}.effect") if data.get("effect") is not None else None
    if effect is not None and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise _Invalid(f"{path}.effect", f"{effect!r} must be NoSchedule, PreferNoSchedule or NoExecute")
    seconds = data.get("toleration_seconds")
    if seconds is not None:
        seconds = _integer(seconds, f"{path}.toleration_seconds", 0)
        if effect != "NoExecute":
            raise _Invalid(f"{path}.toleration_seconds", "only applies with effect NoExecute")
    return Toleration(key=key, operator=operator, value=tol_value, effect=effect, toleration_seconds=seconds)


def _string_map(value: Any, path: str, key_check: Callable[[str, str], None], value_check: Callable[[str, str], None]) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of names to strings, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        key = _string(k, f"{path}.{k}", key_check)
        out[key] = _string(v, f"{path}.{key}", value_check)
    return types.MappingProxyType(out)


def _env_name(value: str, path: str) -> None:
    if not _ENV_NAME.match(value):
        raise _Invalid(path, "not a valid environment variable name (letters, digits, '_', '-', '.'; not starting with a digit)")
    if value == "GOOGLE_APPLICATION_CREDENTIALS":
        raise _Invalid(path, "set by gcs_credentials (mode: secret), which also mounts the key; do not set it here")


def _env_value(value: str, path: str) -> None:
    if "\n" in value or "-----BEGIN" in value or "private_key" in value:
        raise _Invalid(path, "this looks like a credential; a profile is compiled into the pipeline in clear text: "
                       "put it in a Kubernetes Secret (value not shown)")


def _step(value: Any, path: str, step: str) -> StepSettings:
    keys = ("resources", "timeout_seconds", "retry", "node_selector", "tolerations", "env", "accelerator")
    data = _mapping(value if value is not None else {}, path, keys)
    accelerator = None
    if data.get("accelerator") is not None:
        if step != "finetune":
            raise _Invalid(f"{path}.accelerator", "only the finetune step takes an accelerator")
        acc = _mapping(data["accelerator"], f"{path}.accelerator", ("type", "count"), ("type", "count"))
        accelerator = Accelerator(type=_string(acc["type"], f"{path}.accelerator.type", _accelerator_type),
                                  count=_integer(acc["count"], f"{path}.accelerator.count", 1))
    tolerations = data.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise _Invalid(f"{path}.tolerations", f"expected a list, got {type(tolerations).__name__}")
    return StepSettings(
        resources=_resources(data["resources"], f"{path}.resources") if data.get("resources") is not None else Resources(),
        timeout_seconds=_integer(data["timeout_seconds"], f"{path}.timeout_seconds", 1) if data.get("timeout_seconds") is not None else None,
        retry=_retry(data["retry"], f"{path}.retry") if data.get("retry") is not None else None,
        node_selector=_string_map(data.get("node_selector") or {}, f"{path}.node_selector", _label_key, _label_value),
        tolerations=tuple(_toleration(t, f"{path}.tolerations[{i}]") for i, t in enumerate(tolerations)),
        env=_string_map(data.get("env") or {}, f"{path}.env", _env_name, _env_value),
        accelerator=accelerator,
    )


def _accelerator_type(value: str, path: str) -> None:
    if not _ACCELERATOR.match(value):
        raise _Invalid(path, f"{value!r} is not an accelerator resource name (e.g. nvidia.com/gpu)")


def _volumes(value: Any, path: str) -> tuple[VolumeMount, ...]:
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        data = _mapping(item, where, ("claim", "mount_path", "steps"), ("claim", "mount_path"))
        steps = data.get("steps", list(STORAGE_STEPS))
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise _Invalid(f"{where}.steps", f"expected a non-empty list of step names ({', '.join(STEPS)})")
        for s in steps:
            if s not in STEPS:
                raise _Invalid(f"{where}.steps", f"unknown step {s!r}; steps: {', '.join(STEPS)}")
        out.append(VolumeMount(claim=_string(data["claim"], f"{where}.claim", _object_name("PersistentVolumeClaim")),
                               mount_path=_string(data["mount_path"], f"{where}.mount_path", _absolute_path),
                               steps=tuple(dict.fromkeys(steps))))
    return tuple(out)


def _gcs(value: Any, path: str) -> GcsCredentials:
    data = _mapping(value, path, ("mode", "secret_name", "secret_key", "mount_path"), ("mode",))
    mode = _string(data["mode"], f"{path}.mode")
    if mode not in GCS_MODES:
        raise _Invalid(f"{path}.mode", f"{mode!r} must be one of {', '.join(GCS_MODES)}")
    if mode != "secret":
        extra = sorted(set(data) - {"mode"})
        if extra:
            raise _Invalid(f"{path}.{extra[0]}", "only applies with mode: secret")
        return GcsCredentials(mode=mode)
    if data.get("secret_name") is None:
        raise _Invalid(f"{path}.secret_name", "required with mode: secret (the Secret that holds the key file)")
    defaults = GcsCredentials()
    key = _string(data.get("secret_key", defaults.secret_key), f"{path}.secret_key")
    if _looks_like_secret_value(key):
        raise _Invalid(f"{path}.secret_key", "this looks like a secret's value, not the key (file name) inside the Secret (value not shown)")
    if len(key) > 253 or key in (".", "..") or not _SECRET_KEY.match(key):
        raise _Invalid(f"{path}.secret_key", f"{key!r} is not a Secret key (letters, digits, '-', '_', '.')")
    return GcsCredentials(mode=mode, secret_name=_string(data["secret_name"], f"{path}.secret_name", _object_name("Secret")),
                          secret_key=key, mount_path=_string(data.get("mount_path", defaults.mount_path), f"{path}.mount_path", _absolute_path))


def _optional(data: dict, key: str, check: Callable[[str, str], None]) -> str | None:
    return _string(data[key], key, check) if data.get(key) is not None else None


def _profile(data: Any, name: str, source: str) -> Profile:
    keys = ("image", "gpu_image", "image_pull_secrets", "image_pull_policy", "pipeline_root", "service_account",
            "gcs_credentials", "volumes", "steps")
    data = _mapping(data, "", keys)
    steps_data = _mapping(data.get("steps") or {}, "steps", STEPS)
    steps = {s: _step(steps_data.get(s), f"steps.{s}", s) for s in STEPS}
    secrets = data.get("image_pull_secrets") or []
    if not isinstance(secrets, list):
        raise _Invalid("image_pull_secrets", f"expected a list of Secret names, got {type(secrets).__name__}")
    policy = _optional(data, "image_pull_policy", lambda v, p: None)
    if policy is not None and policy not in PULL_POLICIES:
        raise _Invalid("image_pull_policy", f"{policy!r} must be one of {', '.join(PULL_POLICIES)}")

    def root(value: str, path: str) -> None:
        if not _URI.match(value):
            raise _Invalid(path, f"{value!r} must be an object-store URI the cluster writes to (gs://, s3://, minio://); "
                           "a local path exists in no pod")

    profile = Profile(
        name=name, source=source,
        image=_optional(data, "image", _image), gpu_image=_optional(data, "gpu_image", _image),
        image_pull_secrets=tuple(_string(s, f"image_pull_secrets[{i}]", _object_name("Secret")) for i, s in enumerate(secrets)),
        image_pull_policy=policy,
        pipeline_root=_optional(data, "pipeline_root", root),
        service_account=_optional(data, "service_account", _object_name("ServiceAccount")),
        gcs_credentials=_gcs(data["gcs_credentials"], "gcs_credentials") if data.get("gcs_credentials") is not None else GcsCredentials(),
        volumes=_volumes(data.get("volumes") or [], "volumes"),
        steps=types.MappingProxyType(steps),
    )
    _check_together(profile)
    return profile


def _check_together(profile: Profile) -> None:
    if profile.steps["finetune"].accelerator is not None and profile.gpu_image is None:
        raise _Invalid("gpu_image", "required when steps.finetune.accelerator is set (the CPU image has no CUDA libraries)")
    if profile.gcs_credentials.mode == "workload_identity" and profile.service_account is None:
        raise _Invalid("service_account", "required with gcs_credentials.mode workload_identity: the Kubernetes service "
                       "account bound to the Google service account")
    for step in STEPS:
        taken = {profile.gcs_credentials.mount_path: "gcs_credentials.mount_path"} if profile.gcs_credentials.mode == "secret" and step in STORAGE_STEPS else {}
        for i, volume in enumerate(profile.volumes):
            if step not in volume.steps:
                continue
            for other, where in taken.items():
                if volume.mount_path == other or volume.mount_path.startswith(other + "/") or other.startswith(volume.mount_path + "/"):
                    raise _Invalid(f"volumes[{i}].mount_path", f"{volume.mount_path!r} overlaps {where} {other!r} in step {step}")
            taken[volume.mount_path] = f"volumes[{i}].mount_path"
