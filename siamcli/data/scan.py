"""Scanning folders of images.

A dataset is one sub-folder per identity with that identity's images inside (deeper folders
count for the identity they sit in). A gallery may also be a flat folder of unlabelled images.
Nothing is dropped silently: every file passed over is listed in `ScanResult.skipped` with why.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm"}
)


@dataclass(frozen=True)
class ImageItem:
    path: str  # as found under the scanned root (absolute if the root was)
    label: str  # identity = top-level folder name; "" for images at the root of a flat gallery


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class ScanResult:
    root: str
    items: list[ImageItem] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [item.label for item in self.items]

    def counts(self) -> Counter:
        return Counter(self.labels)


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def require_folder(root: str | os.PathLike) -> Path:
    """The folder `root`, or a UserError saying why it cannot be one."""
    root_path = Path(root)
    if not root_path.exists():
        raise UserError(f"{root} does not exist; give a folder of images (one sub-folder per identity)")
    if not root_path.is_dir():
        raise UserError(f"{root} is not a folder; give a folder of images (one sub-folder per identity)")
    return root_path


def scan_folder(root: str | os.PathLike, *, labelled: bool = True) -> ScanResult:
    """List the images under `root`.

    labelled=True: images must sit in identity folders; files at the root are skipped.
    labelled=False (galleries): images at the root get the empty label, the rest their folder's.
    Sorted order makes every later step (splits, ids, sampling) reproducible.
    """
    root_path = require_folder(root)
    result = ScanResult(root=str(root_path))

    def on_walk_error(exc: OSError) -> None:
        result.skipped.append(Skipped(str(exc.filename), f"unreadable folder ({exc.strerror})"))

    image_count_by_dir: Counter = Counter()
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root_path, onerror=on_walk_error, followlinks=True):
        here = Path(dirpath)
        # followlinks lets a linked identity folder count, but a link cycle must not loop forever.
        try:
            st = here.stat()
        except OSError as exc:
            result.skipped.append(Skipped(str(here), f"unreadable folder ({exc.strerror})"))
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            result.skipped.append(Skipped(str(here), "folder visited twice (symlink loop)"))
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        hidden_dirs = sorted(d for d in dirnames if d.startswith("."))
        for name in hidden_dirs:
            result.skipped.append(Skipped(str(here / name), "hidden folder"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        relative = here.relative_to(root_path)
        top = relative.parts[0] if relative.parts else ""
        for name in sorted(filenames):
            path = here / name
            if name.startswith("."):
                result.skipped.append(Skipped(str(path), "hidden file"))
            elif not is_image_name(name):
                result.skipped.append(Skipped(str(path), "not an image (by its extension)"))
            elif not os.path.exists(path):
                result.skipped.append(Skipped(str(path), "broken link"))
            elif not path.is_file():  # a FIFO or device would block the decoder forever
                result.skipped.append(Skipped(str(path), "not a regular file"))
            elif top == "" and labelled:
                result.skipped.append(Skipped(str(path), "not inside an identity folder"))
            else:
                result.items.append(ImageItem(str(path), top))
                image_count_by_dir[top] += 1
        if relative.parts and len(relative.parts) == 1 and not image_count_by_dir[top] and not dirnames:
            result.skipped.append(Skipped(str(here), "empty folder (no images)"))
    return result


def describe_skipped(skipped: list[Skipped], limit: int = 20) -> str:
    """One warning naming every skipped path (the first `limit`, then a count)."""
    shown = [f"{s.path} ({s.reason})" for s in skipped[:limit]]
    more = len(skipped) - len(shown)
    tail = f", and {more} more" if more > 0 else ""
    return f"skipped {len(skipped)} file(s): " + "; ".join(shown) + tail
