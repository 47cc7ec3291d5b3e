"""Compiling with a cluster profile: every setting of the profile is in the compiled YAML, where a
cluster reads it (``deploymentSpec.executors``, the tasks' ``retryPolicy``, the root's defaults,
``defaultPipelineRoot`` and the ``platforms.kubernetes`` section), and nothing from the compiling
machine's credentials is."""

import os

import pytest
import yaml

from components.image import COMPONENT_IMAGE, GPU_COMPONENT_IMAGE
from pipelines.cli import main
from pipelines.profiles import STEPS, STORAGE_STEPS, Profile, load_profile

EXECUTOR = {step: f"exec-{step.replace('_', '-')}" for step in STEPS}
TASK = {step: step.replace("_", "-") for step in STEPS}

# A user's own profile that sets every key there is, with values unlike the shipped ones.
EVERY_KEY = """\
image: registry.example.com/ml/kfp-finetune:7
gpu_image: registry.example.com/ml/kfp-finetune:7-gpu
image_pull_secrets: [regcred, mirror-cred]
image_pull_policy: Always
pipeline_root: minio://mlpipeline/kfp-finetune
service_account: trainer
gcs_credentials: {mode: secret, secret_name: gcs-sa, secret_key: sa.json, mount_path: /etc/gcs}
volumes:
  - {claim: images, mount_path: /data, steps: [preprocess]}
  - {claim: models, mount_path: /models}
  - {claim: scratch, mount_path: /scratch, steps: [skip_push]}
steps:
  preprocess:
    resources: {cpu_request: "3", memory_limit: 12Gi}
    env: {BEAM_LOG_LEVEL: WARNING}
  finetune:
    resources: {cpu_request: 1500m, cpu_limit: "6", memory_request: 8Gi, memory_limit: 16Gi}
    accelerator: {type: nvidia.com/gpu, count: 2}
    node_selector: {cloud.google.com/gke-accelerator: nvidia-tesla-a100, pool: train}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - {key: spot, operator: Equal, value: "true", effect: NoExecute, toleration_seconds: 300}
    retry: {num_retries: 4, backoff_duration: 2m, backoff_factor: 3, backoff_max_duration: 2h}
    timeout_seconds: 86400
    env: {TF_GPU_ALLOCATOR: cuda_malloc_async}
  push:
    retry: {num_retries: 1}
    timeout_seconds: 900
"""


def _compile(path, *argv):
    assert main(["compile", "-o", str(path), *argv]) == 0
    text = path.read_text()
    spec, platform = yaml.safe_load_all(text)
    return spec, platform, text


@pytest.fixture(scope="module")
def every_key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "every-key.yaml"
    path.write_text(EVERY_KEY)
    return str(path)


@pytest.fixture(scope="module", params=["kind", "gke", "eks", "every-key"])
def compiled(request, tmp_path_factory, every_key_file):
    name = every_key_file if request.param == "every-key" else request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KFP_FINETUNE_IMAGE", raising=False)  # it would replace the profile's image
        spec, platform, text = _compile(tmp_path_factory.mktemp("compiled") / "pipeline.yaml", "--profile", name)
    return load_profile(name), spec, platform, text


def _tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _expected_kubernetes(profile: Profile, step: str) -> dict:
    """The ``platforms.kubernetes`` entry of a step's executor, as kfp-kubernetes 2.17.3 writes it,
    derived from the profile's fields one by one."""
    settings, out = profile.steps[step], {}
    if settings.timeout_seconds is not None:
        out["activeDeadlineSeconds"] = str(settings.timeout_seconds)
    if settings.node_selector:
        out["nodeSelector"] = {"labels": dict(settings.node_selector)}
    if settings.tolerations:
        out["tolerations"] = [
            {k: v for k, v in {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
                               "tolerationSeconds": str(t.toleration_seconds) if t.toleration_seconds is not None else None}.items()
             if v is not None}
            for t in settings.tolerations]
    if profile.image_pull_secrets:
        out["imagePullSecret"] = [{"secretName": s, "secretNameParameter": {"runtimeValue": {"constant": s}}}
                                  for s in profile.image_pull_secrets]
    if profile.image_pull_policy:
        out["imagePullPolicy"] = profile.image_pull_policy
    mounts = [{"constant": v.claim, "mountPath": v.mount_path, "pvcNameParameter": {"runtimeValue": {"constant": v.claim}}}
              for v in profile.volumes if step in v.steps]
    if mounts:
        out["pvcMount"] = mounts
    gcs = profile.gcs_credentials
    if gcs.mode == "secret" and step in STORAGE_STEPS:
        out["secretAsVolume"] = [{"mountPath": gcs.mount_path, "optional": False, "secretName": gcs.secret_name,
                                  "secretNameParameter": {"runtimeValue": {"constant": gcs.secret_name}}}]
    return out


def test_every_setting_of_the_profile_is_in_the_compiled_yaml(compiled):
    profile, spec, platform, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    for step in STEPS:
        settings = profile.steps[step]
        container = executors[EXECUTOR[step]]["container"]
        # Platform spec: exactly the profile's settings, nothing more.
        assert kubernetes.get(EXECUTOR[step], {}) == _expected_kubernetes(profile, step), step
        # Resources: the quantities as written (the backend reads the resource* strings).
        r = settings.resources
        given = {"resourceCpuRequest": r.cpu_request, "resourceCpuLimit": r.cpu_limit,
                 "resourceMemoryRequest": r.memory_request, "resourceMemoryLimit": r.memory_limit}
        assert {k: v for k, v in container.get("resources", {}).items() if k in given} == \
            {k: v for k, v in given.items() if v is not None}, step
        # Image: the GPU image only for a finetune step given an accelerator.
        gpu = step == "finetune" and settings.accelerator is not None
        assert container["image"] == (profile.gpu_image if gpu else profile.image or COMPONENT_IMAGE)
        # Environment: the profile's variables, plus the key file of a secret-mounted GCS key.
        env = dict(settings.env)
        if profile.gcs_credentials.mode == "secret" and step in STORAGE_STEPS:
            env["GOOGLE_APPLICATION_CREDENTIALS"] = profile.gcs_credentials.key_file
        if step == "preprocess":  # a remote Beam runner's default SDK worker image: the step's own
            env["KFP_FINETUNE_COMPONENT_IMAGE"] = container["image"]
        assert {e["name"]: e["value"] for e in container.get("env", [])} == env, step
        # Retries: KFP's policy on the task, durations in seconds.
        retry = tasks[TASK[step]].get("retryPolicy")
        if settings.retry is None:
            assert retry is None, step
        else:
            seconds = {"s": 1, "m": 60, "h": 3600}
            as_seconds = lambda d: f"{int(d[:-1]) * seconds[d[-1]]}s"  # noqa: E731
            assert retry == {"maxRetryCount": settings.retry.num_retries, "backoffFactor": settings.retry.backoff_factor,
                             "backoffDuration": as_seconds(settings.retry.backoff_duration),
                             "backoffMaxDuration": as_seconds(settings.retry.backoff_max_duration)}, step
    accelerator = profile.steps["finetune"].accelerator
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["accelerator_count"]["defaultValue"] == (accelerator.count if accelerator else 0)
    assert defaults["accelerator_type"]["defaultValue"] == (accelerator.type if accelerator else "nvidia.com/gpu")
    assert spec.get("defaultPipelineRoot") == profile.pipeline_root


def test_the_kind_profile_compiles_to_this_platform_section(tmp_path):
    """The whole section, literally: the registry claim in every step that touches storage."""
    _, platform, _ = _compile(tmp_path / "kind.yaml", "--profile", "kind")
    claim = {"constant": "kfp-finetune-registry", "mountPath": "/mnt/kfp-finetune",
             "pvcNameParameter": {"runtimeValue": {"constant": "kfp-finetune-registry"}}}
    assert platform == {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
        "exec-preprocess": {"activeDeadlineSeconds": "3600", "imagePullPolicy": "IfNotPresent", "pvcMount": [claim]},
        "exec-finetune": {"activeDeadlineSeconds": "14400", "imagePullPolicy": "IfNotPresent", "pvcMount": [claim]},
        "exec-evaluate": {"activeDeadlineSeconds": "3600", "imagePullPolicy": "IfNotPresent", "pvcMount": [claim]},
        "exec-push": {"activeDeadlineSeconds": "1800", "imagePullPolicy": "IfNotPresent", "pvcMount": [claim]},
        "exec-skip-push": {"activeDeadlineSeconds": "600", "imagePullPolicy": "IfNotPresent"},
    }}}}}


def test_the_every_key_profile_lands_where_a_cluster_reads_it(tmp_path, every_key_file):
    """Spot checks by hand, independent of the derivation above."""
    spec, platform, _ = _compile(tmp_path / "p.yaml", "--profile", every_key_file)
    finetune = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune"]
    assert finetune["tolerations"][1] == {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                                          "tolerationSeconds": "300"}
    assert [m["mountPath"] for m in finetune["pvcMount"]] == ["/models"]
    assert finetune["secretAsVolume"][0]["mountPath"] == "/etc/gcs"
    container = spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]
    assert container["image"] == "registry.example.com/ml/kfp-finetune:7-gpu"
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "TF_GPU_ALLOCATOR": "cuda_malloc_async", "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcs/sa.json"}
    assert _tasks(spec)["finetune"]["retryPolicy"] == {"maxRetryCount": 4, "backoffDuration": "120s", "backoffFactor": 3.0,
                                                        "backoffMaxDuration": "7200s"}
    skip = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-skip-push"]
    assert [m["constant"] for m in skip["pvcMount"]] == ["scratch"] and "secretAsVolume" not in skip
    assert spec["defaultPipelineRoot"] == "minio://mlpipeline/kfp-finetune"
    assert spec["root"]["inputDefinitions"]["parameters"]["accelerator_count"]["defaultValue"] == 2


def test_image_flag_and_variable_override_the_profiles_cpu_image_not_its_gpu_image(tmp_path, monkeypatch):
    def images(spec):
        return {name: ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items()}

    spec, _, _ = _compile(tmp_path / "a.yaml", "--profile", "gke", "--image", "mirror.example/kfp-finetune:1")
    assert images(spec) == {**{e: "mirror.example/kfp-finetune:1" for e in EXECUTOR.values()},
                            "exec-finetune": GPU_COMPONENT_IMAGE}
    monkeypatch.setenv("KFP_FINETUNE_IMAGE", "env.example/kfp-finetune:2")
    spec, _, _ = _compile(tmp_path / "b.yaml", "--profile", "kind")
    assert set(images(spec).values()) == {"env.example/kfp-finetune:2"}


def test_no_credential_of_the_compiling_machine_reaches_the_yaml(tmp_path, monkeypatch, every_key_file):
    key = tmp_path / "my-adc-key-4f1c.json"
    key.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nS3CR3T-4f1c\\n", '
                   '"client_email": "builder-4f1c@project.iam.gserviceaccount.com"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setenv("KFP_TOKEN", "token-4f1c")
    for profile in ("kind", "gke", "eks", every_key_file):
        _, _, text = _compile(tmp_path / "p.yaml", "--profile", profile)
        for leaked in (str(key), key.name, str(tmp_path), "S3CR3T", "PRIVATE KEY", "builder-4f1c", "token-4f1c", "4f1c"):
            assert leaked not in text, (profile, leaked)
        # The only credential setting is the in-container path of a key the cluster mounts from a Secret.
        paths = {line.split("value:")[1].strip() for line in text.splitlines() if "value: /" in line}
        assert paths <= {"/var/secrets/google/key.json", "/etc/gcs/sa.json"}, profile


def test_a_profile_with_an_error_stops_compile_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  finetune:\n    resources: {memory_limit: 4GB}\n")
    assert main(["compile", "--profile", str(bad), "-o", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err == ("error: profile bad.yaml: steps.finetune.resources.memory_limit: '4GB' is not a "
                                       "Kubernetes quantity (e.g. 512Mi, 4Gi or 1G)\n")
    assert not os.path.exists(tmp_path / "p.yaml")
