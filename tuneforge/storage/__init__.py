"""Where uploads, checkpoints and adapters live: a local directory or an S3-compatible bucket.

Both sides import this package (the API reads and writes uploads and reads adapters; the worker
downloads inputs and uploads checkpoints and adapters). It imports neither `app` nor `worker`, and
boto3 only when an `s3://` store is opened.
"""

from tuneforge.storage.base import ArtifactStore, StoreError, StoreMissing
from tuneforge.storage.compose import Composition, Source
from tuneforge.storage.local import LocalStore
from tuneforge.storage.manifest import MANIFEST, ManifestMismatch, fetch_folder, read_manifest, sha256_file
from tuneforge.storage.open import open_store

__all__ = [
    "MANIFEST",
    "ArtifactStore",
    "Composition",
    "LocalStore",
    "ManifestMismatch",
    "Source",
    "StoreError",
    "StoreMissing",
    "fetch_folder",
    "open_store",
    "read_manifest",
    "sha256_file",
]
