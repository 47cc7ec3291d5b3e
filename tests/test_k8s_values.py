"""The Kubernetes value grammars a cluster profile is checked against (pipelines.k8s_values)."""

import decimal

import pytest

from pipelines import k8s_values as v


def _accepted(check, value: str, problem: str) -> bool:
    """Whether ``check`` accepts ``value``; a refusal must say ``problem``."""
    try:
        check(value, "k")
    except v.InvalidValue as e:
        assert problem in e.problem and e.path == "k"
        return False
    return True


@pytest.mark.parametrize("text, quantity", [("500m", "0.5"), ("2", "2"), ("1.5", "1.5"), ("1Gi", str(2**30)),
                                            ("512Mi", str(512 * 2**20)), ("1G", "1000000000"), ("1e3", "1000"),
                                            ("100k", "100000"), (".5", "0.5"), ("250u", "0.00025")])
def test_quantities_are_read_by_the_kubernetes_grammar(text, quantity):
    assert v.quantity_value(text) == decimal.Decimal(quantity)


@pytest.mark.parametrize("text", ["4GB", "1 Gi", "Gi", "1.2.3", "0x10", "1KiB", "1K", ""])
def test_text_outside_the_quantity_grammar_is_not_a_quantity(text):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        v.quantity_value(text)


@pytest.mark.parametrize("kind, text", [("cpu", "500m"), ("cpu", "0.25"), ("cpu", "4"), ("memory", "4Gi"),
                                        ("memory", "1000M"), ("memory", "1073741824")])
def test_quantities_both_kubernetes_and_kfp_accept_pass(kind, text):
    v.quantity(kind)(text, "k")


@pytest.mark.parametrize("kind, text", [("cpu", "1e3"), ("cpu", "2k"), ("memory", "1.5Gi"), ("memory", "1e9"),
                                        ("memory", "512k")])
def test_kubernetes_quantities_kfp_would_refuse_are_refused_here_first(kind, text):
    with pytest.raises(v.InvalidValue, match=f"is a Kubernetes quantity, but kfp 2.17.3 accepts {kind} only as"):
        v.quantity(kind)(text, "k")


@pytest.mark.parametrize("value", ["gcs-key", "kfp-finetune-runner", "a", "reg.cred-1", "x" * 253])
def test_object_names(value):
    v.object_name("Secret")(value, "k")


@pytest.mark.parametrize("value, secret", [("Gcs_Key", False), ("-key", False), ("key-", False), ("a..b", False),
                                           ("key\nfile", True), ('{"type": "x"}', True), ("x" * 254, True),
                                           ("AKIA1234567890ABCDEFGHIJKLMNOPQRSTUVWXYZ", True)])
def test_bad_object_names_and_secret_values_are_told_apart(value, secret):
    with pytest.raises(v.InvalidValue) as caught:
        v.object_name("Secret")(value, "k")
    assert ("looks like a secret's value" in caught.value.problem) is secret
    assert (value not in caught.value.problem) is secret


@pytest.mark.parametrize("key, ok", [("cloud.google.com/gke-accelerator", True), ("nvidia.com/gpu.present", True),
                                     ("pool", True), ("a/b/c", False), ("Bad_Prefix.com/x", False), ("x" * 64, False),
                                     ("/name", False), ("", False)])
def test_label_keys(key, ok):
    assert _accepted(v.check_label_key, key, "is not a Kubernetes label key") is ok


@pytest.mark.parametrize("image, ok", [("ghcr.io/kfp-finetune/kfp-finetune:0.1.0", True), ("python:3.11-slim", True),
                                       ("localhost:5000/x/y:1", True), ("busybox", True),
                                       ("r.example/x@sha256:" + "a" * 64, True), ("UPPER/name:1", False),
                                       ("x:1 --privileged", False), ("https://ghcr.io/x:1", False)])
def test_image_references(image, ok):
    assert _accepted(v.check_image, image, "is not an image reference") is ok


@pytest.mark.parametrize("text, seconds", [("0s", 0), ("30s", 30), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1w", 604800)])
def test_durations(text, seconds):
    assert v.duration_seconds(text, "k") == seconds
