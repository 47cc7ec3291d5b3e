"""Model registry on plain storage: a local folder or ``gs://bucket/prefix``.

Layout (the same on a local disk and on Google Cloud Storage)::

    <root>/<model>/<N>/                  one immutable version; N = 1, 2, 3, ...
    <root>/<model>/<N>/saved_model.pb    the pushed folder's files, copied as they are
    <root>/<model>/<N>/variables/...
    <root>/<model>/<N>/metadata.json     written last: the given metadata plus "model",
                                         "version", "created_at" and "files" (the manifest:
                                         path -> size in bytes of every other file)
    <root>/<model>/aliases/<alias>.json  {"model", "alias", "version", "history": [...]}
    <root>/<model>/audit.jsonl           local only: the audit log, one JSON event a line
    <root>/<model>/audit/<event id>.json GCS only: the audit log, one object an event
    <root>/<model>/.tmp-<hex>/           local only: a push in progress, with its lease
    <root>/<model>/.tmp-<hex>.lease      (a lock file held by the push: see leases.py)
    <root>/<model>/.reserved/<N>         GCS only: marker that claims version N
    <root>/registry.json                 optional settings: {"env_order": ["dev", "staging", "prod"]}

Numeric version folders sit directly under the model folder, so TF Serving can use
``<root>/<model>`` as its model base path; TF Serving ignores the non-numeric ``aliases`` and
hidden folders.

A version is *complete*, and only then listed, once its ``metadata.json`` exists. Guarantees on
both storages (how each keeps them: ``local.py``, ``gcs.py``): two pushes never get the same
version; two alias updates never lose one another; every alias move (push with an alias,
promote, rollback; forced or not) appends one event to the model's audit log once the move is
committed, and two concurrent moves never lose one another's event; a gated push
(``Registry.push(compared_with=N)``) moves its alias only if it still points at N; a failed or
refused push leaves nothing behind, and what a killed one left is removed by the next push of the
model (GCS: once stale) or by ``check_registry(repair=True)``; a retried GCS request never
pushes, moves or records anything twice.

Promotion policy (``Registry.promote``, ``kfp-finetune models promote``): see ``policy.py``.

Modules: ``errors`` (every error), ``policy`` (pure rules), ``records`` (stored records),
``backend`` (what a storage provides), ``reader`` and ``base`` (the storage-neutral
``Registry``), ``local`` (with ``leases`` and ``local_sweep``) and ``gcs`` (the storages),
``access`` (:func:`open_registry`, :func:`champion`), ``serving``
(:func:`export_to_serving_base`), ``check`` (:func:`check_registry`, ``models check``). Callers use this package's
names: ``from components import registry``, then ``registry.open_registry(uri)``.

The package imports no KFP or TensorFlow so that it loads fast; the GCS client is imported only
when a ``gs://`` registry is opened.
"""

from components.registry.access import champion, open_registry
from components.registry.check import Finding, check_registry, damaged_versions
from components.registry.backend import STALE_AFTER_S
from components.registry.base import UNGATED, Registry
from components.registry.errors import (
    AliasNotFoundError,
    ChampionChangedError,
    ConcurrentUpdateError,
    CorruptMetadataError,
    ModelNotFoundError,
    NoPreviousVersionError,
    PromotionRefusedError,
    RegistryConfigError,
    RegistryError,
    ServingExportError,
    VersionNotFoundError,
)
from components.registry.gcs import GcsRegistry
from components.registry.local import LocalRegistry
from components.registry.policy import (
    ALIAS_ACTIONS,
    DEFAULT_ENV_ORDER,
    check_promotion,
    parse_env_order,
    validate_env_order,
    validate_name,
    validate_version,
)
from components.registry.reader import ModelVersion
from components.registry.records import ALIASES_DIR, AUDIT_DIR, AUDIT_FILE, CONFIG_FILE, METADATA_FILE
from components.registry.serving import ServingExport, export_to_serving_base

__all__ = [
    "ALIASES_DIR",
    "ALIAS_ACTIONS",
    "AUDIT_DIR",
    "AUDIT_FILE",
    "AliasNotFoundError",
    "CONFIG_FILE",
    "ChampionChangedError",
    "ConcurrentUpdateError",
    "CorruptMetadataError",
    "DEFAULT_ENV_ORDER",
    "Finding",
    "GcsRegistry",
    "LocalRegistry",
    "METADATA_FILE",
    "ModelNotFoundError",
    "ModelVersion",
    "NoPreviousVersionError",
    "PromotionRefusedError",
    "Registry",
    "RegistryConfigError",
    "RegistryError",
    "ServingExport",
    "STALE_AFTER_S",
    "ServingExportError",
    "UNGATED",
    "VersionNotFoundError",
    "champion",
    "check_promotion",
    "check_registry",
    "damaged_versions",
    "export_to_serving_base",
    "open_registry",
    "parse_env_order",
    "validate_env_order",
    "validate_name",
    "validate_version",
]
