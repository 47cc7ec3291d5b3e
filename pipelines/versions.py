"""Named pipelines and content-addressed pipeline versions on a KFP API server.

``submit`` and ``schedule`` do not embed the compiled package in each run: they start runs and
recurring runs from a *pipeline version*, so every package ever run shows under Pipelines in the
KFP UI and a run's version is one click away. :func:`ensure_pipeline_version` finds or creates
the named pipeline and the version of the package:

* The version is named by the package's content: ``sha256-`` and the first 12 hex digits of
  :func:`package_digest` (e.g. ``sha256-3f2a9c0d1e4b``). Uploading the same content again finds
  that version and reuses it, so no duplicate appears; a changed package has another digest and
  becomes a new version. The full digest goes into the version's description.
* The digest covers the package's *parsed* YAML documents (the PipelineSpec and, when present,
  the platform spec), serialized as canonical JSON: re-indenting the file or editing its comments
  does not make a new version; any change to what the server receives does (kfp's compiler writes
  the same bytes for the same pipeline, its ``sdkVersion`` included).
* Two uploads may race (two ``submit`` at once): creating a pipeline or a version whose name is
  taken makes the server answer ``409 Conflict`` (KFP's upload server maps ``AlreadyExists`` to
  409), and the name is then read again instead of failing.

Requests, all through ``kfp.Client`` (kfp 2.17.3, REST ``v2beta1``):
``GET /pipelines?filter=display_name=NAME``, ``POST /pipelines`` (a pipeline without versions),
``GET /pipelines/{id}/versions?filter=display_name=VERSION`` and the multipart
``POST /pipelines/upload_version?name=VERSION&pipelineid=ID``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import yaml

VERSION_PREFIX = "sha256-"
# 12 hex digits = 48 bits: a collision between two versions of one pipeline is negligible, and
# the name stays short in the KFP UI and a valid Kubernetes name (KFP's Kubernetes-native
# pipeline store keeps versions as objects named by it).
VERSION_DIGEST_CHARS = 12
HTTP_CONFLICT = 409


@dataclasses.dataclass(frozen=True)
class PipelineVersionRef:
    """The pipeline version a run or recurring run starts from.

    Attributes:
        pipeline_id: the pipeline's server id (a UUID).
        pipeline_name: the pipeline's display name.
        version_id: the version's server id (a UUID).
        version_name: ``sha256-`` and 12 hex digits of :attr:`digest`.
        digest: the package's full SHA-256 (64 lowercase hex digits), see :func:`package_digest`.
        created: True when this call uploaded the version, False when it existed already.
    """

    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    digest: str
    created: bool


def package_digest(package_path: str) -> str:
    """The SHA-256 of a compiled pipeline package's content.

    Args:
        package_path: a KFP IR YAML file (one or two YAML documents).

    Returns:
        64 lowercase hex digits: the SHA-256 of the list of the file's YAML documents as JSON
        with sorted keys and no whitespace (UTF-8), so formatting and comments do not count.

    Raises:
        OSError: the file cannot be read.
        yaml.YAMLError: the file is not YAML.
    """
    with open(package_path, encoding="utf-8") as f:
        documents = list(yaml.safe_load_all(f))
    canonical = json.dumps(documents, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def version_name_for(digest: str) -> str:
    """The version name of a package digest: ``sha256-<first 12 hex digits>``."""
    return VERSION_PREFIX + digest[:VERSION_DIGEST_CHARS]


def _equals_filter(name: str) -> str:
    # The v2beta1 filter the kfp SDK itself uses to find an experiment or pipeline by name.
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline with this display name, or ``None`` when there is none.

    Args:
        client: a ``kfp.Client``.
        name: the pipeline's display name.
        namespace: the namespace of a multi-user deployment (``None``: shared pipelines).

    Returns:
        The pipeline id, or ``None``.

    Raises:
        ValueError: more than one pipeline has that display name (the server does not keep
            display names unique); the message names them.
        kfp_server_api.ApiException: the server refused the request.
    """
    found = client.list_pipelines(filter=_equals_filter(name), namespace=namespace, page_size=2).pipelines or []
    if len(found) > 1:
        ids = ", ".join(p.pipeline_id for p in found)
        raise ValueError(f"{len(found)} pipelines are named {name!r} (ids {ids}); choose another --pipeline-name")
    return found[0].pipeline_id if found else None


def _create_or_read(create: Callable[[], str], read: Callable[[], str | None], what: str) -> tuple[str, bool]:
    """Creates an item, or, when the server answers 409 Conflict, reads the one that won the race.

    Returns:
        ``(id, created)``: the new item's id and True, or the existing one's and False.

    Raises:
        ValueError: 409, but ``read`` finds nothing (the name is taken where this client cannot
            list it, e.g. in another namespace); the message names ``what``.
    """
    from kfp_server_api.exceptions import ApiException

    try:
        return create(), True
    except ApiException as error:
        if error.status != HTTP_CONFLICT:
            raise
        found = read()
        if found is None:
            raise ValueError(f"the KFP server says {what} exists (409) but lists none by that name") from error
        return found, False


def find_version(client: Any, pipeline_id: str, version_name: str) -> str | None:
    """The id of the pipeline's version with this name, or ``None``.

    Args:
        client: a ``kfp.Client``.
        pipeline_id: the pipeline's id.
        version_name: the version's display name.

    Returns:
        The version id, or ``None``.

    Raises:
        kfp_server_api.ApiException: the server refused the request.
    """
    response = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=_equals_filter(version_name), page_size=1)
    versions = response.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def ensure_pipeline_version(
    client: Any,
    package_path: str,
    pipeline_name: str,
    namespace: str | None = None,
    description: str | None = None,
) -> PipelineVersionRef:
    """Finds or uploads the version of a package under a named pipeline, creating the pipeline.

    Args:
        client: a ``kfp.Client``.
        package_path: the compiled pipeline (KFP IR ``.yaml``).
        pipeline_name: the pipeline's display name (created when missing).
        namespace: the namespace of a multi-user deployment; ``None`` for a shared pipeline.
        description: the pipeline's description when it is created.

    Returns:
        The pipeline and version; ``created`` says whether this call uploaded the version.

    Raises:
        ValueError: several pipelines carry ``pipeline_name``, or the server reports a conflict
            for a name it then does not list.
        OSError: the package cannot be read.
        kfp_server_api.ApiException: the server refused a request.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    digest = package_digest(package_path)
    version_name = version_name_for(digest)
    pipeline_id = find_pipeline(client, pipeline_name, namespace)
    if pipeline_id is None:
        # POST /pipelines creates the pipeline alone; the upload endpoint would also create a
        # first version named after the pipeline, a second copy of the content under another name.
        body = client.api_models.V2beta1Pipeline(display_name=pipeline_name, description=description, namespace=namespace)
        pipeline_id, _ = _create_or_read(
            lambda: client.pipelines.pipeline_service_create_pipeline(pipeline=body).pipeline_id,
            lambda: find_pipeline(client, pipeline_name, namespace),
            f"pipeline {pipeline_name!r}" + (f" (namespace {namespace!r})" if namespace else ""),
        )
    else:
        existing = find_version(client, pipeline_id, version_name)
        if existing is not None:
            return PipelineVersionRef(pipeline_id, pipeline_name, existing, version_name, digest, created=False)
    version_id, created = _create_or_read(
        lambda: client.upload_pipeline_version(
            pipeline_package_path=package_path,
            pipeline_version_name=version_name,
            pipeline_id=pipeline_id,
            description=f"sha256:{digest}",
        ).pipeline_version_id,
        lambda: find_version(client, pipeline_id, version_name),
        f"version {version_name!r} of pipeline {pipeline_name!r}",
    )
    return PipelineVersionRef(pipeline_id, pipeline_name, version_id, version_name, digest, created)
