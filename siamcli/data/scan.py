"""Scanning folders of images.

A dataset is one sub-folder per identity with that identity's images inside (deeper folders
count for the identity they sit in). A gallery may also be a flat folder of unlabelled images.
Nothing is dropped silently: every file passed over is listed in `ScanResult.skipped` with why.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm"}
)
# Folder names of a dataset's splits: a folder of them is one level above the identity folders.
SPLIT_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation", "dev", "eval", "holdout"})
OUTSIDE_IDENTITY = "not inside an identity folder"


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
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


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
        # followlinks lets a linked identity folder count; the two checks below keep link
        # cycles (and links to "/" or another ancestor) from walking forever or out of root.
        try:
            st = here.stat()
        except OSError as exc:
            result.skipped.append(Skipped(str(here), f"unreadable folder ({exc.strerror})"))
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            result.skipped.append(Skipped(str(here), "folder already scanned through another link"))
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        kept_dirs = []
        for name in sorted(dirnames):
            if name.startswith("."):
                result.skipped.append(Skipped(str(here / name), "hidden folder"))
            elif (target := _link_to_ancestor(here / name)) is not None:
                result.skipped.append(Skipped(str(here / name), f"symlink loop (links back to {target})"))
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        relative = here.relative_to(root_path)
        top = relative.parts[0] if relative.parts else ""
        prefix = "" if str(here) == "." else os.path.join(str(here), "")  # as str(here / name), without a Path per file
        for name in sorted(filenames):
            path = prefix + name
            if name.startswith("."):
                reason = "hidden file"
            elif not is_image_name(name):
                reason = "not an image (by its extension)"
            else:
                reason = _file_problem(path)
                if reason is None and top == "" and labelled:
                    reason = OUTSIDE_IDENTITY
            if reason is None:
                result.items.append(ImageItem(path, top))
                image_count_by_dir[top] += 1
            else:
                result.skipped.append(Skipped(path, reason))
        if relative.parts and len(relative.parts) == 1 and not image_count_by_dir[top] and not dirnames:
            result.skipped.append(Skipped(str(here), "empty folder (no images)"))
    return result


def check_identity_layout(scan: ScanResult) -> None:
    """Refuse, with the fix, a labelled folder laid out one level off (a UserError):

    images at its root and no identity folder with images (nothing to train on), or
    sub-folders that are all named like splits (train/, test/, ...) and hold identity folders
    (each split would train as one identity). Images at the root beside identity folders are
    only skipped, and named with the other skipped files.
    """
    root = scan.root
    if not scan.items:
        loose = sum(s.reason == OUTSIDE_IDENTITY for s in scan.skipped)
        if loose:
            raise UserError(f"{loose} image{'s' if loose != 1 else ''} at the root of {root} and no identity sub-folders: "
                            f"put each identity's images in a sub-folder {os.path.join(root, '<identity>')}/")
        return
    inner: dict[str, set[str]] = {}  # top folder → the folders inside it that hold its images ("" for itself)
    for item in scan.items:
        parts = Path(item.path).relative_to(root).parts
        inner.setdefault(item.label, set()).add(parts[1] if len(parts) > 2 else "")
    if all(top.lower() in SPLIT_NAMES and "" not in folders for top, folders in inner.items()):
        splits = sorted(inner)
        train = next((name for name in splits if name.lower().startswith("train")), max(splits, key=lambda n: len(inner[n])))
        raise UserError(f"{root}'s sub-folders look like a split ({', '.join(name + '/' for name in splits)}), each holding "
                        f"identity folders: point train at {os.path.join(root, train)}")


def _link_to_ancestor(path: Path) -> str | None:
    """Where `path` points if it is a link to its own folder or one above it, else None."""
    if not path.is_symlink():
        return None
    target = os.path.realpath(path)
    parent = os.path.realpath(path.parent)
    return target if parent == target or parent.startswith(target.rstrip(os.sep) + os.sep) else None


def _file_problem(path: str) -> str | None:
    """Why the decoder could not read `path`, found from its metadata alone; None if it can.

    Caught here rather than at decode time so the reason shows up at once, and because
    opening a FIFO or device to find out would block or never end.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken link"
    except PermissionError:
        return "unreadable (permission denied)"
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "unreadable (permission denied)"
    return None


def describe_skipped(skipped: list[Skipped], limit: int = 20) -> str:
    """One warning naming every skipped path (the first `limit`, then a count)."""
    shown = [f"{s.path} ({s.reason})" for s in skipped[:limit]]
    more = len(skipped) - len(shown)
    tail = f", and {more} more" if more > 0 else ""
    return f"skipped {len(skipped)} file(s): " + "; ".join(shown) + tail
