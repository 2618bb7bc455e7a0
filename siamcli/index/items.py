"""What each index row is: items.csv (id, path, label) and hashes.csv (id, sha256).

items.csv has exactly the columns id, path, label, in FAISS row order: row i of the file is
row i of the index. `id` is stable: an image keeps its id across --append and --prune, and an
id that was dropped is never given to another image (the manifest's `next_id`). `path` is
absolute, so answers and --prune do not depend on the directory a command runs from;
`label` is the image's top-level folder under the gallery ("" at the gallery's root).

hashes.csv (id, sha256) holds the sha256 of each image's bytes when it was embedded, in the
same row order. --append compares it to decide what is already indexed (same path and same
content) and what changed.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from siamcli.errors import CorruptArtifactError
from siamcli.hashing import file_sha256

ITEMS_COLUMNS = ["id", "path", "label"]
HASHES_COLUMNS = ["id", "sha256"]


@dataclass(frozen=True, slots=True)  # slots: a million of them stay small
class IndexItem:
    id: int  # stable across --append / --prune
    path: str  # absolute path of the image
    label: str  # top-level folder under the gallery; "" for images at its root
    sha256: str  # content hash of the file when it was embedded


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes ("" when it cannot be read: it then never matches)."""
    try:
        return file_sha256(path)
    except OSError:
        return ""


def write_items(directory: Path, items: Iterable[IndexItem]) -> None:
    """Write items.csv and hashes.csv into `directory` (an atomic build folder)."""
    with open(directory / "items.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as items_file, \
            open(directory / "hashes.csv", "w", newline="", encoding="utf-8") as hashes_file:
        items_writer = csv.writer(items_file)
        hashes_writer = csv.writer(hashes_file)
        items_writer.writerow(ITEMS_COLUMNS)
        hashes_writer.writerow(HASHES_COLUMNS)
        for item in items:
            items_writer.writerow([item.id, item.path, item.label])
            hashes_writer.writerow([item.id, item.sha256])


def _rows(path: Path, columns: list[str]) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != columns:
                raise CorruptArtifactError(f"{path} does not start with the columns {','.join(columns)}; the index is damaged: rebuild it with --force")
            rows = list(reader)
    except FileNotFoundError as exc:
        raise CorruptArtifactError(f"{path} is missing; the index is incomplete: rebuild it with `siamcli index GALLERY --force`") from exc
    except csv.Error as exc:
        raise CorruptArtifactError(f"{path} is not valid CSV ({exc}); rebuild the index with --force") from exc
    for number, row in enumerate(rows, start=2):
        if len(row) != len(columns):
            raise CorruptArtifactError(f"{path} line {number} has {len(row)} fields, expected {len(columns)}; rebuild the index with --force")
    return rows


def _ids(path: Path, rows: list[list[str]]) -> list[int]:
    try:
        ids = [int(row[0]) for row in rows]
    except ValueError as exc:
        raise CorruptArtifactError(f"{path} holds an id that is not an integer; rebuild the index with --force") from exc
    if len(set(ids)) != len(ids):
        raise CorruptArtifactError(f"{path} holds the same id twice; rebuild the index with --force")
    return ids


def read_items(directory: Path, with_hashes: bool = True) -> list[IndexItem]:
    """Rows of items.csv (and hashes.csv), validated: ids unique integers, files agreeing."""
    rows = _rows(directory / "items.csv", ITEMS_COLUMNS)
    ids = _ids(directory / "items.csv", rows)
    hashes = [""] * len(rows)
    if with_hashes:
        hash_rows = _rows(directory / "hashes.csv", HASHES_COLUMNS)
        if _ids(directory / "hashes.csv", hash_rows) != ids:
            raise CorruptArtifactError(f"{directory}/hashes.csv does not list the ids of items.csv in the same order; rebuild the index with --force")
        hashes = [row[1] for row in hash_rows]
    return [IndexItem(id=i, path=row[1], label=row[2], sha256=h) for i, row, h in zip(ids, rows, hashes)]
