"""Model registry on plain storage: a local folder or ``gs://bucket/prefix``.

Layout (the same on a local disk and on Google Cloud Storage)::

    <root>/<model>/<N>/                  one immutable version; N = 1, 2, 3, ...
    <root>/<model>/<N>/saved_model.pb    the pushed folder's files, copied as they are
    <root>/<model>/<N>/variables/...
    <root>/<model>/<N>/metadata.json     written last: the given metadata plus "model",
                                         "version" and "created_at"
    <root>/<model>/aliases/<alias>.json  {"model", "alias", "version", "history": [...]}
    <root>/<model>/audit.jsonl           local only: the audit log, one JSON event a line
    <root>/<model>/audit/<event id>.json GCS only: the audit log, one object an event
    <root>/<model>/.tmp-<uuid>/          local only: a push in progress
    <root>/<model>/.reserved/<N>         GCS only: marker that claims version N
    <root>/registry.json                 optional settings: {"env_order": ["dev", "staging", "prod"]}

Numeric version folders sit directly under the model folder, so TF Serving can use
``<root>/<model>`` as its model base path; TF Serving ignores the non-numeric ``aliases`` and
hidden folders.

A version is *complete*, and only then listed, once its ``metadata.json`` exists. Guarantees on
both storages (how each keeps them: ``local.py``, ``gcs.py``): two pushes never get the same
version; two alias updates never lose one another; every alias move (push with an alias,
promote, rollback; forced or not) appends one event to the model's audit log once the move is
committed, and two concurrent moves never lose one another's event.

Promotion policy (``Registry.promote``, ``kfp-finetune models promote``): see ``policy.py``.

Modules: ``errors`` (every error), ``policy`` (pure rules), ``records`` (stored records),
``backend`` (what a storage provides), ``reader`` and ``base`` (the storage-neutral
``Registry``), ``local`` and ``gcs`` (the storages), ``access`` (:func:`open_registry`,
:func:`champion`), ``serving`` (:func:`export_to_serving_base`). Callers use this package's
names: ``from components import registry``, then ``registry.open_registry(uri)``.

The package imports no KFP or TensorFlow so that it loads fast; the GCS client is imported only
when a ``gs://`` registry is opened.
"""

from components.registry.access import champion, open_registry
from components.registry.base import Registry
from components.registry.errors import (
    AliasNotFoundError,
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
    "ConcurrentUpdateError",
    "CorruptMetadataError",
    "DEFAULT_ENV_ORDER",
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
    "ServingExportError",
    "VersionNotFoundError",
    "champion",
    "check_promotion",
    "export_to_serving_base",
    "open_registry",
    "parse_env_order",
    "validate_env_order",
    "validate_name",
    "validate_version",
]
