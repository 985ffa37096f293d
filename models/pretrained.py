"""ImageNet weights for the torchvision backbones, fetched as torchvision does, only when asked.

``--pretrained`` downloads the file torchvision publishes for the architecture into torch hub's
checkpoints folder (where torchvision itself would put it, so either reuses the other's copy),
with the project's resumable downloader (progress bar, retries, ``.part`` then rename). The
file is verified against the sha256 prefix in its name (torchvision's ``<name>-<prefix>.pth``
convention) before it gets that name, so a corrupt or substituted download is never kept there.
``SNAP_VISION_PRETRAINED_URL`` replaces the download address by a full URL (a mirror, or a local
server in tests); the hash-prefix check then applies to the file name at that URL.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision

from common.errors import UserError
from data.download import download, sha256_of

URL_ENV = "SNAP_VISION_PRETRAINED_URL"
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torchvision's <name>-<sha256 prefix>.pth


def hub_checkpoints() -> Path:
    """torch hub's checkpoints folder (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_url(architecture: str) -> str:
    """The URL of torchvision's default ImageNet weights for ``architecture``, or the override."""
    return os.environ.get(URL_ENV) or torchvision.models.get_model_weights(architecture).DEFAULT.url


def fetch_pretrained(architecture: str, progress: bool = True) -> Path:
    """The ImageNet weights file of ``architecture`` in the hub cache, downloaded if not there yet."""
    url = weights_url(architecture)
    name = Path(urlsplit(url).path).name
    dest = hub_checkpoints() / name
    if dest.is_file():
        return dest
    match = _HASH_PREFIX.search(name)
    if match is None:
        raise UserError(f"{url}: its file name {name!r} carries no sha256 prefix (torchvision's "
                        "<name>-<hash>.pth), so the download cannot be verified; use a URL that keeps "
                        "torchvision's file name")
    unverified = dest.with_name(name + ".unverified")
    try:
        download(url, unverified, expect_archive=False, progress=progress)
    except UserError as err:
        raise UserError(f"{err}; or, offline: pass --pretrained_weights FILE, or put {name} "
                        f"in {dest.parent}") from err
    _verify(unverified, match.group(1), url)
    os.replace(unverified, dest)
    return dest


def _verify(path: Path, prefix: str, url: str) -> None:
    """A file whose sha256 does not start with ``prefix`` is deleted: never kept under the real name."""
    digest = sha256_of(path)
    if not digest.startswith(prefix):
        path.unlink()
        raise UserError(f"{url}: the downloaded file's sha256 starts {digest[:len(prefix)]}, not {prefix} as "
                        "its name says; it was deleted (damaged download or wrong file): run again, or "
                        "check the URL")
