"""Cluster profiles on load: the shipped examples, and every kind of mistake refused with its key."""

import textwrap

import pytest

from pipelines.profile_apply import check_run_paths
from pipelines.profiles import ProfileError, StepSettings, load_profile, parse_profile

# A JSON service-account key as someone might paste it where the Secret's *name* belongs.
KEY_BLOB = '{"type": "service_account", "private_key_id": "0123abcd", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv"}'
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
TOKEN = "ghp_R4nd0mT0kenV4lu3WithD1g1tsAndUPPERcase0123456789"


def test_the_shipped_profiles_load_with_their_settings():
    kind, gke, eks = load_profile("kind"), load_profile("gke"), load_profile("eks")
    assert kind.image is None and kind.image_pull_policy == "IfNotPresent" and kind.pipeline_root is None
    assert [(v.claim, v.mount_path, v.steps) for v in kind.volumes] == [
        ("kfp-finetune-registry", "/mnt/kfp-finetune", ("preprocess", "finetune", "evaluate", "push"))]
    assert kind.gcs_credentials.mode == "none" and kind.steps["finetune"].accelerator is None
    assert kind.steps["finetune"].resources.memory_limit == "6Gi" and kind.steps["finetune"].retry.num_retries == 2

    assert gke.gcs_credentials.mode == "workload_identity" and gke.service_account == "kfp-finetune-runner"
    assert gke.pipeline_root == "gs://kfp-finetune-artifacts/pipeline-root"
    finetune = gke.steps["finetune"]
    assert (finetune.accelerator.type, finetune.accelerator.count) == ("nvidia.com/gpu", 1)
    assert dict(finetune.node_selector) == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert [(t.key, t.operator, t.effect) for t in finetune.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]

    assert eks.gcs_credentials.mode == "secret" and eks.gcs_credentials.key_file == "/var/secrets/google/key.json"
    assert eks.image_pull_secrets == ("ghcr-pull",) and eks.pipeline_root.startswith("s3://")
    assert dict(eks.steps["finetune"].node_selector) == {"node.kubernetes.io/instance-type": "g5.xlarge"}


def test_the_shipped_images_are_the_projects():
    from components.image import COMPONENT_IMAGE, GPU_COMPONENT_IMAGE

    for name in ("gke", "eks"):
        profile = load_profile(name)
        assert (profile.image, profile.gpu_image) == (COMPONENT_IMAGE, GPU_COMPONENT_IMAGE), name


def test_a_users_file_is_loaded_by_path_and_named_by_its_file(tmp_path):
    path = tmp_path / "my-cluster.yaml"
    path.write_text("steps:\n  evaluate:\n    timeout_seconds: 60\n")
    profile = load_profile(str(path))
    assert (profile.name, profile.source) == ("my-cluster", str(path))
    assert profile.steps["evaluate"].timeout_seconds == 60
    assert profile.steps["finetune"] == StepSettings()


def test_names_and_paths_that_do_not_exist_are_refused():
    with pytest.raises(FileNotFoundError, match=r"^profile 'gkee' is not a shipped profile \(eks, gke, kind\) nor a path"):
        load_profile("gkee")
    with pytest.raises(FileNotFoundError, match=r"^profile file 'nowhere/p.yaml' does not exist$"):
        load_profile("nowhere/p.yaml")


def test_a_folder_is_refused_as_a_folder(tmp_path, capsys):
    """An existing folder was reported as a file that "does not exist"."""
    from pipelines.cli import main

    assert main(["compile", "--profile", str(tmp_path), "-o", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err == f"error: profile {str(tmp_path)!r} is a folder: give the profile's YAML file\n"
    assert list(tmp_path.iterdir()) == []


def _refused(yaml_text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        parse_profile(textwrap.dedent(yaml_text), "p.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("imagee: x\n", "profile p.yaml: imagee: unknown key (did you mean 'image'?); allowed here: image, gpu_image, image_pull_secrets, "
         "image_pull_policy, pipeline_root, service_account, gcs_credentials, volumes, steps"),
        ("steps:\n  train: {}\n", "profile p.yaml: steps.train: unknown key; allowed here: preprocess, finetune, "
         "evaluate, push, skip_push"),
        ("steps:\n  finetune:\n    resources: {memory: 4Gi}\n", "profile p.yaml: steps.finetune.resources.memory: "
         "unknown key (did you mean 'memory_limit'?); allowed here: cpu_request, cpu_limit, memory_request, memory_limit"),
        ("steps:\n  finetune:\n    timeout_seconds: 1h\n",
         "profile p.yaml: steps.finetune.timeout_seconds: expected an integer, got str"),
        ("steps:\n  finetune:\n    timeout_seconds: true\n",
         "profile p.yaml: steps.finetune.timeout_seconds: expected an integer, got bool"),
        ("steps:\n  finetune:\n    resources: {memory_limit: 4GB}\n",
         "profile p.yaml: steps.finetune.resources.memory_limit: '4GB' is not a Kubernetes quantity (e.g. 512Mi, 4Gi or 1G)"),
        ("steps:\n  finetune:\n    resources: {memory_limit: 1.5Gi}\n",
         "profile p.yaml: steps.finetune.resources.memory_limit: '1.5Gi' is a Kubernetes quantity, but kfp 2.17.3 accepts "
         "memory only as an integer with an optional suffix E, P, T, G, M, Ei, Pi, Ti, Gi, Mi or Ki (1.5Gi: write 1536Mi)"),
        ("steps:\n  push:\n    resources: {cpu_limit: -1}\n", "profile p.yaml: steps.push.resources.cpu_limit: '-1' must not be negative"),
        ("steps:\n  push:\n    resources: {cpu_limit: 2 cores}\n",
         "profile p.yaml: steps.push.resources.cpu_limit: '2 cores' is not a Kubernetes quantity (e.g. 500m, 2 or 1.5)"),
        ("steps:\n  push:\n    resources: {cpu_request: '2', cpu_limit: 500m}\n",
         "profile p.yaml: steps.push.resources.cpu_request: '2' is more than cpu_limit '500m' (Kubernetes refuses the pod)"),
        ("steps:\n  evaluate:\n    accelerator: {type: nvidia.com/gpu, count: 1}\n",
         "profile p.yaml: steps.evaluate.accelerator: only the finetune step takes an accelerator"),
        ("steps:\n  finetune:\n    accelerator: {type: nvidia.com/gpu, count: 1}\n",
         "profile p.yaml: gpu_image: required when steps.finetune.accelerator is set (the CPU image has no CUDA libraries)"),
        ("gpu_image: g:1\nsteps:\n  finetune:\n    accelerator: {type: nvidia.com/gpu, count: 0}\n",
         "profile p.yaml: steps.finetune.accelerator.count: must be at least 1, got 0"),
        ("gcs_credentials: {mode: workload_identity}\n", "profile p.yaml: service_account: required with "
         "gcs_credentials.mode workload_identity: the Kubernetes service account bound to the Google service account"),
        ("gcs_credentials: {mode: secret}\n", "profile p.yaml: gcs_credentials.secret_name: required with mode: secret "
         "(the Secret that holds the key file)"),
        ("gcs_credentials: {mode: none, secret_name: k}\n",
         "profile p.yaml: gcs_credentials.secret_name: only applies with mode: secret"),
        ("gcs_credentials: {mode: adc}\n",
         "profile p.yaml: gcs_credentials.mode: 'adc' must be one of none, workload_identity, secret"),
        ("gcs_credentials: {mode: secret, secret_name: My_Key}\n",
         "profile p.yaml: gcs_credentials.secret_name: 'My_Key' is not a valid Secret name (RFC 1123 subdomain: "
         "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)"),
        ("volumes:\n  - {claim: reg, mount_path: mnt/reg}\n", "profile p.yaml: volumes[0].mount_path: 'mnt/reg' must be a "
         "normalized absolute path other than '/' (no '..', no trailing '/', no ':')"),
        ("volumes:\n  - {claim: reg, mount_path: /mnt/reg, steps: [train]}\n",
         "profile p.yaml: volumes[0].steps: unknown step 'train'; steps: preprocess, finetune, evaluate, push, skip_push"),
        ("volumes:\n  - {claim: reg}\n", "profile p.yaml: volumes[0].mount_path: required"),
        ("volumes:\n  - {claim: a, mount_path: /mnt/a}\n  - {claim: b, mount_path: /mnt/a/b}\n",
         "profile p.yaml: volumes[1].mount_path: '/mnt/a/b' overlaps volumes[0].mount_path '/mnt/a' in step preprocess"),
        ("gcs_credentials: {mode: secret, secret_name: k, mount_path: /mnt/keys}\nvolumes:\n  - {claim: a, mount_path: /mnt/keys}\n",
         "profile p.yaml: volumes[0].mount_path: '/mnt/keys' overlaps gcs_credentials.mount_path '/mnt/keys' in step preprocess"),
        ("steps:\n  finetune:\n    tolerations: [{key: nvidia.com/gpu, effect: NoScheduled}]\n",
         "profile p.yaml: steps.finetune.tolerations[0].effect: 'NoScheduled' must be NoSchedule, PreferNoSchedule or NoExecute"),
        ("steps:\n  finetune:\n    tolerations: [{key: g, operator: Exists, value: 'true'}]\n",
         "profile p.yaml: steps.finetune.tolerations[0].value: must be empty with operator Exists"),
        ("steps:\n  finetune:\n    tolerations: [{key: g, effect: NoSchedule, toleration_seconds: 60}]\n",
         "profile p.yaml: steps.finetune.tolerations[0].toleration_seconds: only applies with effect NoExecute"),
        ("steps:\n  finetune:\n    node_selector: {'cloud.google.com/gke accelerator': l4}\n",
         "profile p.yaml: steps.finetune.node_selector.cloud.google.com/gke accelerator: 'cloud.google.com/gke accelerator' is "
         "not a Kubernetes label key ([PREFIX/]NAME; NAME at most 63 letters, digits, '-', '_', '.'; PREFIX a DNS subdomain)"),
        ("steps:\n  finetune:\n    node_selector: {gpu: 1}\n",
         "profile p.yaml: steps.finetune.node_selector.gpu: expected a string, got int"),
        ("steps:\n  finetune:\n    retry: {num_retries: 0}\n", "profile p.yaml: steps.finetune.retry.num_retries: must be at least 1, got 0"),
        ("steps:\n  finetune:\n    retry: {num_retries: 2, backoff_duration: 1 hour}\n",
         "profile p.yaml: steps.finetune.retry.backoff_duration: '1 hour' is not a duration: an integer followed by s, m, h, "
         "d or w (e.g. 30s, 10m, 1h)"),
        ("steps:\n  finetune:\n    retry: {num_retries: 2, backoff_duration: 2h, backoff_max_duration: 1h}\n",
         "profile p.yaml: steps.finetune.retry.backoff_max_duration: must not be shorter than backoff_duration"),
        ("steps:\n  finetune:\n    env: {GOOGLE_APPLICATION_CREDENTIALS: /k.json}\n",
         "profile p.yaml: steps.finetune.env.GOOGLE_APPLICATION_CREDENTIALS: the profile sets it itself when it mounts "
         "a key: use gcs_credentials: {mode: secret, secret_name: NAME} (the Secret's key file is mounted and the "
         "variable points at it), or mode: workload_identity"),
        ("pipeline_root: /data/pipeline-root\n", "profile p.yaml: pipeline_root: '/data/pipeline-root' must be an "
         "object-store URI the cluster writes to (gs://, s3://, minio://); a local path exists in no pod"),
        ("image: Not An Image\n",
         "profile p.yaml: image: 'Not An Image' is not an image reference (REGISTRY/NAME:TAG or NAME@sha256:DIGEST)"),
        ("image_pull_policy: Sometimes\n", "profile p.yaml: image_pull_policy: 'Sometimes' must be one of Always, IfNotPresent, Never"),
        ("image_pull_secrets: regcred\n", "profile p.yaml: image_pull_secrets: expected a list of Secret names, got str"),
        ("steps:\n  finetune: {}\nsteps:\n  push: {}\n", "profile p.yaml: not valid YAML (line 3): key 'steps' given twice"),
        ("- image: x\n", "profile p.yaml: top level: expected a mapping with keys image, gpu_image, image_pull_secrets, "
         "image_pull_policy, pipeline_root, service_account, gcs_credentials, volumes, steps; got list"),
        ("", "profile p.yaml: the file is empty; see pipelines/cluster_profiles/kind.yaml for the keys"),
        ("steps: [\n", "profile p.yaml: not valid YAML (line 2): expected the node content, but found '<stream end>'"),
    ],
)
def test_a_mistake_is_refused_naming_the_file_and_the_key(yaml_text, message):
    assert _refused(yaml_text) == message


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("gcs_credentials:\n  mode: secret\n  secret_name: '{secret}'\n", "gcs_credentials.secret_name"),
        ("image_pull_secrets:\n  - '{secret}'\n", "image_pull_secrets[0]"),
        ("service_account: '{secret}'\n", "service_account"),
        ("volumes:\n  - claim: '{secret}'\n    mount_path: /mnt/r\n", "volumes[0].claim"),
        ("gcs_credentials:\n  mode: secret\n  secret_name: k\n  secret_key: '{secret}'\n", "gcs_credentials.secret_key"),
    ],
)
@pytest.mark.parametrize("secret", [KEY_BLOB, PEM, TOKEN, "a" * 300], ids=["json-key", "pem", "token", "too-long"])
def test_a_secret_value_where_a_name_belongs_is_refused_without_echoing_it(yaml_text, key, secret):
    quoted = secret.replace("'", "''").replace("\n", "\n\n")  # a YAML single-quoted scalar keeps the newlines
    message = _refused(yaml_text.replace("{secret}", quoted))
    assert message.startswith(f"profile p.yaml: {key}: this looks like a secret's value")
    assert message.endswith("(value not shown)")
    for fragment in ("private_key", "BEGIN", "MIIEv", TOKEN[:12], "a" * 64):
        assert fragment not in message


NO_CREDENTIALS = ("a profile is compiled into the pipeline in clear text, so it carries no credential: give the run "
                  "an identity instead (service_account with Workload Identity or IRSA), or for GCS "
                  "gcs_credentials: {mode: secret} (value not shown)")


def test_a_credential_in_an_environment_variable_is_refused_without_echoing_it():
    text = "steps:\n  push:\n    env:\n      GCS_KEY: '" + PEM.replace("\n", "\n\n") + "'\n"
    message = _refused(text)
    assert message == f"profile p.yaml: steps.push.env.GCS_KEY: this looks like a credential; {NO_CREDENTIALS}"


# Example credentials in the issuers' documented shapes (AWS's own documentation example key).
@pytest.mark.reliability("security")
@pytest.mark.parametrize("name, value, why", [
    ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY names a credential"),
    ("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz012345", "this looks like a credential"),
    ("GH", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "this looks like a credential"),
    ("DB_PASSWORD", "hunter2hunter2", "DB_PASSWORD names a credential"),
    ("OPENAI_API_KEY", "x", "OPENAI_API_KEY names a credential"),
    ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", "this looks like a credential"),
])
def test_credentials_by_name_or_by_issuer_prefix_are_refused_in_env(name, value, why):
    """These compiled into the YAML in clear text (review: the AWS key at line 595)."""
    message = _refused(f"steps:\n  finetune:\n    env:\n      {name}: '{value}'\n")
    assert message == f"profile p.yaml: steps.finetune.env.{name}: {why}; {NO_CREDENTIALS}"
    assert value not in message or value == "x"


@pytest.mark.parametrize("name, value", [
    ("TOKENIZERS_PARALLELISM", "false"),
    ("DATA_DIR", "/mnt/kfp-finetune/data/Flowers2024/train_images_v2/Part7"),
    ("KFP_FINETUNE_TF_LOG_LEVEL", "0"),
    ("PASSWORD_FILE_HINT_DISABLED", ""),
])
def test_ordinary_environment_variables_pass(name, value):
    profile = parse_profile(f"steps:\n  finetune:\n    env:\n      {name}: '{value}'\n", "p.yaml")
    assert dict(profile.steps["finetune"].env) == {name: value}


@pytest.mark.reliability("security")
@pytest.mark.parametrize("yaml_text, key", [
    ("service_account: ghp_abcdefghijklmnopqrstuvwxyz0123456789\n", "service_account"),
    ("image_pull_secrets: [ghp_abcdefghijklmnopqrstuvwxyz0123456789]\n", "image_pull_secrets[0]"),
])
def test_a_lower_case_token_where_a_name_belongs_is_not_echoed(yaml_text, key):
    """A GitHub token is all lower case and digits after its prefix: it passed as a name-shaped
    value and was echoed in the 'not a valid name' error."""
    message = _refused(yaml_text)
    assert message.startswith(f"profile p.yaml: {key}: this looks like a secret's value")
    assert "abcdefghij" not in message and message.endswith("(value not shown)")


def test_run_paths_must_lie_on_a_volume_of_the_steps_that_use_them():
    kind, gke = load_profile("kind"), load_profile("gke")
    on_volume = {"data_uri": "/mnt/kfp-finetune/data/flowers", "registry_uri": "/mnt/kfp-finetune/registry",
                 "base_weights": "/mnt/kfp-finetune/data/b.weights.h5", "checkpoint_dir": "/mnt/kfp-finetune/ckpt/run-1"}
    check_run_paths(kind, on_volume)
    check_run_paths(gke, {"data_uri": "gs://b/d", "registry_uri": "gs://b/r", "base_weights": "imagenet", "checkpoint_dir": ""})
    with pytest.raises(ValueError) as caught:
        check_run_paths(kind, {**on_volume, "registry_uri": "/home/me/registry"})
    assert str(caught.value) == ("registry_uri '/home/me/registry' is on no volume of profile kind in step preprocess (mounted "
                                 "there: /mnt/kfp-finetune): a pod's own filesystem is lost when it ends; use a path under "
                                 "a mounted volume, or a gs:// URI")
    with pytest.raises(ValueError, match=r"^data_uri '/mnt/kfp-finetune-other/d' is on no volume of profile kind"):
        check_run_paths(kind, {**on_volume, "data_uri": "/mnt/kfp-finetune-other/d"})
    with pytest.raises(ValueError, match=r"^checkpoint_dir 'ckpt' is on no volume of profile gke in step finetune \(mounted there: none\)"):
        check_run_paths(gke, {"checkpoint_dir": "ckpt"})
