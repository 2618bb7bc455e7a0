"""Where the backbone's starting weights come from: ImageNet, nothing, or a file.

ImageNet weights are downloaded by Keras on first use and cached in ~/.keras/models. Offline,
that download would stall or fail deep inside Keras, so we look for the cached file first and
check that the download host answers before asking Keras to fetch it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from siamcli.errors import UserError

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


@dataclass(frozen=True)
class WeightsChoice:
    kind: str  # "imagenet" | "none" | "file"
    path: str | None  # the file to load (imagenet: cached file, or None to let Keras download)

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"


def keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def resolve_weights(spec: str, probe_timeout: float = 3.0) -> WeightsChoice:
    """Turn the --weights value into a WeightsChoice, failing fast if it cannot be had."""
    value = spec.strip()
    if value.lower() == "none":
        return WeightsChoice("none", None)
    if value.lower() == "imagenet":
        cached = keras_cache_dir() / IMAGENET_NOTOP_FILE
        if cached.is_file():
            return WeightsChoice("imagenet", str(cached))
        if not _host_reachable(_DOWNLOAD_HOST, probe_timeout):
            raise UserError(
                "ImageNet weights are not cached and cannot be downloaded (offline); "
                f"put {IMAGENET_NOTOP_FILE} in {keras_cache_dir()}, pass --weights PATH to a "
                "ResNet50 weights file, or train from scratch with --weights none"
            )
        return WeightsChoice("imagenet", None)
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {value} not found; pass --weights imagenet, none, or the path of a weights file")
    return WeightsChoice("file", str(path))


def _host_reachable(address: tuple[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
