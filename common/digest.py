"""Hex digests of files, read in chunks so a multi-GB archive never has to fit in memory.

(``hashlib.file_digest`` does the same from Python 3.11 on; this project supports 3.10.)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_hexdigest(path: str | Path, algorithm: str) -> str:
    """The ``algorithm`` ("sha1", "sha256", ...) hex digest of the file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
