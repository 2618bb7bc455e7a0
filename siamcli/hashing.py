"""sha256 of a file's bytes: the one content hash siamcli uses.

It ties an index or a report to the exact model it came from (the model fingerprint), records
each index file's checksum in manifest.json, and tells `--append` whether an image whose size
or time changed has new content (items.sqlite). Imports nothing from siamcli, so every layer can use it.
"""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20  # read 1 MiB at a time: memory stays flat for multi-GB index files


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the whole file at `path`; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
