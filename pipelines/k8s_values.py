"""The grammars of the Kubernetes values a cluster profile holds (``pipelines.profiles``).

Each ``check_*`` function takes ``(value, path)`` and raises :class:`InvalidValue` naming the
key path and what is expected; they follow Kubernetes' own rules (k8s.io/apimachinery:
``resource.Quantity``, RFC 1123 object names, label keys and values) and, where kfp 2.17.3 is
narrower, kfp's (its ``PipelineTask.set_cpu_*``/``set_memory_*`` patterns). A value that looks
like a credential is refused without being echoed.
"""

from __future__ import annotations

import decimal
import os
import re
from typing import Callable

Check = Callable[[str, str], None]

# Kubernetes' quantity grammar (resource.Quantity: signed number, then a binary-SI, decimal-SI
# or exponent suffix).
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
# The duration forms kfp's set_retry turns into seconds (kfp.dsl.structures.convert_duration_to_seconds).
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Docker's reference grammar: the first component is a registry host only when it has a '.', a
# port or is localhost; the repository path is lower-case.
_IMAGE = re.compile(r"^((([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|localhost)(:[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_ACCELERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class InvalidValue(Exception):
    """A value refused at ``path`` (dotted key path, e.g. ``steps.finetune.retry``) for ``problem``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


# Credentials recognizable by their own prefix (the issuers document them): GitHub tokens
# (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), Hugging Face (hf_), AWS access key ids (AKIA, ASIA),
# Google API keys (AIza), GitLab (glpat-), Slack (xox?-), OpenAI-style (sk-), and JWTs (eyJ...).
_TOKEN_PREFIX = re.compile(r"^(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|hf_[A-Za-z0-9]{20,}|(AKIA|ASIA)[A-Z0-9]{16}"
                           r"|AIza[\w-]{30,}|glpat-[\w-]{20,}|xox[abprs]-[\w-]{10,}|sk-[\w-]{20,}|eyJ[\w-]{10,}\.[\w-]+\.[\w-]*)$")
# Variable names that say they hold a credential (whole '_'-separated words: TOKENIZERS_PARALLELISM is not one).
_CREDENTIAL_WORDS = {"SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
_CREDENTIAL_PAIRS = {("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY"), ("AUTH", "KEY")}


def _token_like(value: str) -> bool:
    """A token by its prefix, or a long mixed-case run of base64/URL-safe characters with digits."""
    return _TOKEN_PREFIX.match(value) is not None or (
        len(value) >= 40 and re.fullmatch(r"[A-Za-z0-9+/=_.-]+", value) is not None
        and any(c.isupper() for c in value) and any(c.isdigit() for c in value))


def looks_like_secret_value(value: str) -> bool:
    """A JSON key file, a PEM block, a token: what belongs *inside* a Secret, not its name."""
    return (any(marker in value for marker in ("\n", "{", "}", "-----BEGIN", "private_key"))
            or len(value) > 253 or _token_like(value))


def names_a_credential(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (``DB_PASSWORD``,
    ``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``OPENAI_API_KEY``)."""
    words = [w for w in re.split(r"[_.-]", name.upper()) if w]
    return bool(_CREDENTIAL_WORDS.intersection(words)) or any(pair in _CREDENTIAL_PAIRS for pair in zip(words, words[1:]))


def object_name(what: str) -> Check:
    """The check of a ``what`` (Secret, PersistentVolumeClaim, ServiceAccount) name."""

    def check(value: str, path: str) -> None:
        if looks_like_secret_value(value):
            # The value is not echoed: it may be a credential.
            raise InvalidValue(path, f"this looks like a secret's value (a key, a PEM block, a token), not the name of a "
                               f"{what}; store it in a Kubernetes Secret (kubectl create secret generic NAME "
                               "--from-file=key.json=FILE) and write that NAME here (value not shown)")
        if not _DNS_SUBDOMAIN.match(value):
            raise InvalidValue(path, f"{value!r} is not a valid {what} name (RFC 1123 subdomain: lower-case letters, "
                               "digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)")
    return check


def check_secret_key(value: str, path: str) -> None:
    """A key (file name) inside a Secret."""
    if looks_like_secret_value(value):
        raise InvalidValue(path, "this looks like a secret's value, not the key (file name) inside the Secret (value not shown)")
    if value in (".", "..") or not _SECRET_KEY.match(value):
        raise InvalidValue(path, f"{value!r} is not a Secret key (letters, digits, '-', '_', '.')")


def check_label_key(value: str, path: str) -> None:
    prefix, slash, name = value.rpartition("/")
    bad_prefix = slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))
    if bad_prefix or len(name) > 63 or not _LABEL_NAME.match(name):
        raise InvalidValue(path, f"{value!r} is not a Kubernetes label key ([PREFIX/]NAME; NAME at most 63 letters, "
                           "digits, '-', '_', '.'; PREFIX a DNS subdomain)")


def check_label_value(value: str, path: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise InvalidValue(path, f"{value!r} is not a Kubernetes label value (at most 63 letters, digits, '-', '_', '.')")


def check_absolute_path(value: str, path: str) -> None:
    if not value.startswith("/") or value == "/" or os.path.normpath(value) != value or ":" in value:
        raise InvalidValue(path, f"{value!r} must be a normalized absolute path other than '/' "
                           "(no '..', no trailing '/', no ':')")


def _matching(pattern: re.Pattern[str], problem: str) -> Check:
    def check(value: str, path: str) -> None:
        if not pattern.match(value):
            raise InvalidValue(path, f"{value!r} {problem}")
    return check


check_image = _matching(_IMAGE, "is not an image reference (REGISTRY/NAME:TAG or NAME@sha256:DIGEST)")
check_pipeline_root = _matching(_URI, "must be an object-store URI the cluster writes to (gs://, s3://, minio://); "
                                "a local path exists in no pod")
check_accelerator_type = _matching(_ACCELERATOR, "is not an accelerator resource name (e.g. nvidia.com/gpu)")


def check_env_name(value: str, path: str) -> None:
    if not _ENV_NAME.match(value):
        raise InvalidValue(path, "not a valid environment variable name (letters, digits, '_', '-', '.'; not starting "
                           "with a digit)")
    if value == "GOOGLE_APPLICATION_CREDENTIALS":
        raise InvalidValue(path, "the profile sets it itself when it mounts a key: use gcs_credentials: {mode: secret, "
                           "secret_name: NAME} (the Secret's key file is mounted and the variable points at it), or "
                           "mode: workload_identity")


_NO_CREDENTIALS = ("a profile is compiled into the pipeline in clear text, so it carries no credential: give the run "
                   "an identity instead (service_account with Workload Identity or IRSA), or for GCS "
                   "gcs_credentials: {mode: secret} (value not shown)")


def check_env_value(value: str, path: str) -> None:
    """An environment variable's value (``path`` ends in its name): no credential, by its look or its name."""
    name = path.rsplit(".", 1)[-1]
    # By prefix only: a long path or URL of mixed case and digits is an ordinary value here.
    if any(marker in value for marker in ("\n", "-----BEGIN", "private_key")) or _TOKEN_PREFIX.match(value):
        raise InvalidValue(path, f"this looks like a credential; {_NO_CREDENTIALS}")
    if value and names_a_credential(name):
        raise InvalidValue(path, f"{name} names a credential; {_NO_CREDENTIALS}")


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


def quantity(kind: str) -> Check:
    """The check of a ``cpu`` or ``memory`` quantity: Kubernetes' grammar, not negative, and a
    form kfp 2.17.3 accepts."""

    def check(value: str, path: str) -> None:
        try:
            number = quantity_value(value)
        except ValueError:
            example = "500m, 2 or 1.5" if kind == "cpu" else "512Mi, 4Gi or 1G"
            raise InvalidValue(path, f"{value!r} is not a Kubernetes quantity (e.g. {example})") from None
        if number < 0:
            raise InvalidValue(path, f"{value!r} must not be negative")
        if not (_KFP_CPU if kind == "cpu" else _KFP_MEMORY).match(value):
            allowed = ("a number, or an integer followed by 'm'" if kind == "cpu" else
                       "an integer with an optional suffix E, P, T, G, M, Ei, Pi, Ti, Gi, Mi or Ki (1.5Gi: write 1536Mi)")
            raise InvalidValue(path, f"{value!r} is a Kubernetes quantity, but kfp 2.17.3 accepts {kind} only as {allowed}")
    return check


def duration_seconds(value: str, path: str) -> int:
    """Seconds of a duration ``<integer><s|m|h|d|w>``.

    Raises:
        InvalidValue: another form.
    """
    match = _DURATION.match(value)
    if not match:
        raise InvalidValue(path, f"{value!r} is not a duration: an integer followed by s, m, h, d or w (e.g. 30s, 10m, 1h)")
    return int(match.group(1)) * _SECONDS[match.group(2)]
