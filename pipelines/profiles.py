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
import difflib
import importlib.resources
import os
import types
from collections.abc import Mapping
from typing import Any

import yaml

from pipelines import k8s_values as v
from pipelines.k8s_values import Check, InvalidValue

# Profile step names; the KFP task of each is named alike ("skip_push": task "skip-push").
STEPS = ("preprocess", "finetune", "evaluate", "push", "skip_push")
# The steps that read or write data, the backbone, checkpoints and the registry: the default
# steps of a volume and the steps that get GCS credentials.
STORAGE_STEPS = ("preprocess", "finetune", "evaluate", "push")
SHIPPED_PROFILES = ("eks", "gke", "kind")
GCS_MODES = ("none", "workload_identity", "secret")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


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
        IsADirectoryError: a folder was given.
        ProfileError: invalid YAML or an invalid value, naming the file and the key path.
    """
    if "/" not in path_or_name and os.sep not in path_or_name and not path_or_name.endswith((".yaml", ".yml")):
        if path_or_name not in SHIPPED_PROFILES:
            raise FileNotFoundError(f"profile {path_or_name!r} is not a shipped profile ({', '.join(SHIPPED_PROFILES)}) "
                                    "nor a path; give a file as PATH.yaml or ./NAME")
        resource = importlib.resources.files("pipelines") / "cluster_profiles" / f"{path_or_name}.yaml"
        return parse_profile(resource.read_text(encoding="utf-8"), f"{path_or_name}.yaml", name=path_or_name, source=str(resource))
    if os.path.isdir(path_or_name):
        raise IsADirectoryError(f"profile {path_or_name!r} is a folder: give the profile's YAML file")
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
    except InvalidValue as e:
        raise ProfileError(f"profile {label}: {e.path or 'top level'}: {e.problem}") from None


def _mapping(value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(path, f"expected a mapping with keys {', '.join(allowed)}; got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidValue(f"{path}.{key}" if path else str(key), f"unknown key{hint}; allowed here: {', '.join(allowed)}")
    for key in required:
        if value.get(key) is None:
            raise InvalidValue(f"{path}.{key}" if path else key, "required")
    return value


def _string(value: Any, path: str, check: Check | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidValue(path, f"expected a string, got {type(value).__name__}")
    if check is not None:
        check(value, path)
    return value


def _integer(value: Any, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(path, f"expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidValue(path, f"must be at least {minimum}, got {value}")
    return value


def _optional(data: dict[str, Any], key: str, path: str, check: Check | None = None) -> str | None:
    return _string(data[key], path, check) if data.get(key) is not None else None


def _resources(value: Any, path: str) -> Resources:
    data = _mapping(value, path, ("cpu_request", "cpu_limit", "memory_request", "memory_limit"))
    # YAML reads `cpu_limit: 2` as a number; Kubernetes and kfp take the quantity as text.
    text = {k: str(q) if isinstance(q, (int, float)) and not isinstance(q, bool) else q for k, q in data.items()}
    got = {k: _optional(text, k, f"{path}.{k}", v.quantity(k.split("_")[0])) for k in text}
    for kind in ("cpu", "memory"):
        request, limit = got.get(f"{kind}_request"), got.get(f"{kind}_limit")
        if request and limit and v.quantity_value(request) > v.quantity_value(limit):
            raise InvalidValue(f"{path}.{kind}_request",
                               f"{request!r} is more than {kind}_limit {limit!r} (Kubernetes refuses the pod)")
    return Resources(**got)


def _retry(value: Any, path: str) -> Retry:
    keys = ("num_retries", "backoff_duration", "backoff_factor", "backoff_max_duration")
    data = {**dataclasses.asdict(Retry(num_retries=1)), **_mapping(value, path, keys, ("num_retries",))}
    num_retries = _integer(data["num_retries"], f"{path}.num_retries", 1)
    first, most = (v.duration_seconds(_string(data[k], f"{path}.{k}"), f"{path}.{k}")
                   for k in ("backoff_duration", "backoff_max_duration"))
    if most < first:
        raise InvalidValue(f"{path}.backoff_max_duration", "must not be shorter than backoff_duration")
    factor = data["backoff_factor"]
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
        raise InvalidValue(f"{path}.backoff_factor", f"expected a number >= 1, got {factor!r}")
    return Retry(num_retries=num_retries, backoff_duration=data["backoff_duration"], backoff_factor=float(factor),
                 backoff_max_duration=data["backoff_max_duration"])


def _toleration(value: Any, path: str) -> Toleration:
    data = _mapping(value, path, ("key", "operator", "value", "effect", "toleration_seconds"))
    key = _optional(data, "key", f"{path}.key", v.check_label_key)
    operator = _string(data.get("operator", "Equal"), f"{path}.operator")
    if operator not in ("Equal", "Exists"):
        raise InvalidValue(f"{path}.operator", f"{operator!r} must be Equal or Exists")
    label = _optional(data, "value", f"{path}.value", v.check_label_value)
    if operator == "Exists" and label:
        raise InvalidValue(f"{path}.value", "must be empty with operator Exists")
    if key is None and operator != "Exists":
        raise InvalidValue(f"{path}.key", "required unless operator is Exists (which then tolerates every taint)")
    effect = _optional(data, "effect", f"{path}.effect")
    if effect is not None and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise InvalidValue(f"{path}.effect", f"{effect!r} must be NoSchedule, PreferNoSchedule or NoExecute")
    seconds = data.get("toleration_seconds")
    if seconds is not None:
        seconds = _integer(seconds, f"{path}.toleration_seconds", 0)
        if effect != "NoExecute":
            raise InvalidValue(f"{path}.toleration_seconds", "only applies with effect NoExecute")
    return Toleration(key=key, operator=operator, value=label, effect=effect, toleration_seconds=seconds)


def _string_map(value: Any, path: str, key_check: Check, value_check: Check) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue(path, f"expected a mapping of names to strings, got {type(value).__name__}")
    out = {}
    for name, text in value.items():
        key = _string(name, f"{path}.{name}", key_check)  # the name first: its message is the more telling
        out[key] = _string(text, f"{path}.{name}", value_check)
    return types.MappingProxyType(out)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidValue(path, f"expected a list, got {type(value).__name__}")
    return value


def _step(value: Any, path: str, step: str) -> StepSettings:
    keys = ("resources", "timeout_seconds", "retry", "node_selector", "tolerations", "env", "accelerator")
    data = _mapping(value if value is not None else {}, path, keys)
    accelerator = None
    if data.get("accelerator") is not None:
        if step != "finetune":
            raise InvalidValue(f"{path}.accelerator", "only the finetune step takes an accelerator")
        acc = _mapping(data["accelerator"], f"{path}.accelerator", ("type", "count"), ("type", "count"))
        accelerator = Accelerator(type=_string(acc["type"], f"{path}.accelerator.type", v.check_accelerator_type),
                                  count=_integer(acc["count"], f"{path}.accelerator.count", 1))
    timeout = data.get("timeout_seconds")
    return StepSettings(
        resources=_resources(data["resources"], f"{path}.resources") if data.get("resources") is not None else Resources(),
        timeout_seconds=_integer(timeout, f"{path}.timeout_seconds", 1) if timeout is not None else None,
        retry=_retry(data["retry"], f"{path}.retry") if data.get("retry") is not None else None,
        node_selector=_string_map(data.get("node_selector") or {}, f"{path}.node_selector", v.check_label_key,
                                  v.check_label_value),
        tolerations=tuple(_toleration(t, f"{path}.tolerations[{i}]")
                          for i, t in enumerate(_list(data.get("tolerations") or [], f"{path}.tolerations"))),
        env=_string_map(data.get("env") or {}, f"{path}.env", v.check_env_name, v.check_env_value),
        accelerator=accelerator,
    )


def _volumes(value: Any, path: str) -> tuple[VolumeMount, ...]:
    out = []
    for i, item in enumerate(_list(value, path)):
        where = f"{path}[{i}]"
        data = _mapping(item, where, ("claim", "mount_path", "steps"), ("claim", "mount_path"))
        steps = data.get("steps", list(STORAGE_STEPS))
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise InvalidValue(f"{where}.steps", f"expected a non-empty list of step names ({', '.join(STEPS)})")
        for s in steps:
            if s not in STEPS:
                raise InvalidValue(f"{where}.steps", f"unknown step {s!r}; steps: {', '.join(STEPS)}")
        out.append(VolumeMount(claim=_string(data["claim"], f"{where}.claim", v.object_name("PersistentVolumeClaim")),
                               mount_path=_string(data["mount_path"], f"{where}.mount_path", v.check_absolute_path),
                               steps=tuple(dict.fromkeys(steps))))
    return tuple(out)


def _gcs(value: Any, path: str) -> GcsCredentials:
    data = _mapping(value, path, ("mode", "secret_name", "secret_key", "mount_path"), ("mode",))
    mode = _string(data["mode"], f"{path}.mode")
    if mode not in GCS_MODES:
        raise InvalidValue(f"{path}.mode", f"{mode!r} must be one of {', '.join(GCS_MODES)}")
    if mode != "secret":
        extra = sorted(set(data) - {"mode"})
        if extra:
            raise InvalidValue(f"{path}.{extra[0]}", "only applies with mode: secret")
        return GcsCredentials(mode=mode)
    if data.get("secret_name") is None:
        raise InvalidValue(f"{path}.secret_name", "required with mode: secret (the Secret that holds the key file)")
    data = {**dataclasses.asdict(GcsCredentials()), **data}
    return GcsCredentials(mode=mode, secret_name=_string(data["secret_name"], f"{path}.secret_name", v.object_name("Secret")),
                          secret_key=_string(data["secret_key"], f"{path}.secret_key", v.check_secret_key),
                          mount_path=_string(data["mount_path"], f"{path}.mount_path", v.check_absolute_path))


def _profile(data: Any, name: str, source: str) -> Profile:
    keys = ("image", "gpu_image", "image_pull_secrets", "image_pull_policy", "pipeline_root", "service_account",
            "gcs_credentials", "volumes", "steps")
    data = _mapping(data, "", keys)
    steps = _mapping(data.get("steps") or {}, "steps", STEPS)
    secrets = data.get("image_pull_secrets") or []
    if not isinstance(secrets, list):
        raise InvalidValue("image_pull_secrets", f"expected a list of Secret names, got {type(secrets).__name__}")
    policy = _optional(data, "image_pull_policy", "image_pull_policy")
    if policy is not None and policy not in PULL_POLICIES:
        raise InvalidValue("image_pull_policy", f"{policy!r} must be one of {', '.join(PULL_POLICIES)}")
    gcs = data.get("gcs_credentials")
    profile = Profile(
        name=name, source=source,
        image=_optional(data, "image", "image", v.check_image),
        gpu_image=_optional(data, "gpu_image", "gpu_image", v.check_image),
        image_pull_secrets=tuple(_string(s, f"image_pull_secrets[{i}]", v.object_name("Secret")) for i, s in enumerate(secrets)),
        image_pull_policy=policy,
        pipeline_root=_optional(data, "pipeline_root", "pipeline_root", v.check_pipeline_root),
        service_account=_optional(data, "service_account", "service_account", v.object_name("ServiceAccount")),
        gcs_credentials=_gcs(gcs, "gcs_credentials") if gcs is not None else GcsCredentials(),
        volumes=_volumes(data.get("volumes") or [], "volumes"),
        steps=types.MappingProxyType({s: _step(steps.get(s), f"steps.{s}", s) for s in STEPS}),
    )
    _check_together(profile)
    return profile


def _check_together(profile: Profile) -> None:
    if profile.steps["finetune"].accelerator is not None and profile.gpu_image is None:
        raise InvalidValue("gpu_image", "required when steps.finetune.accelerator is set (the CPU image has no CUDA libraries)")
    gcs = profile.gcs_credentials
    if gcs.mode == "workload_identity" and profile.service_account is None:
        raise InvalidValue("service_account", "required with gcs_credentials.mode workload_identity: the Kubernetes "
                           "service account bound to the Google service account")
    for step in STEPS:
        # Two mounts at one path, or one inside another, in the same pod: Kubernetes refuses or shadows.
        taken = {gcs.mount_path: "gcs_credentials.mount_path"} if gcs.mode == "secret" and step in STORAGE_STEPS else {}
        for i, volume in enumerate(profile.volumes):
            if step not in volume.steps:
                continue
            for other, where in taken.items():
                if volume.mount_path == other or volume.mount_path.startswith(other + "/") or other.startswith(volume.mount_path + "/"):
                    raise InvalidValue(f"volumes[{i}].mount_path",
                                       f"{volume.mount_path!r} overlaps {where} {other!r} in step {step}")
            taken[volume.mount_path] = f"volumes[{i}].mount_path"
