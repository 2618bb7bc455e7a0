"""What each row of a segment is: `items.sqlite`, read k rows at a time.

Every segment (the index folder itself, and each `segments/NNNNNN/` an update adds) keeps its
rows' metadata in one SQLite file, written once and never changed afterwards:

    CREATE TABLE items (
        row      INTEGER PRIMARY KEY,  -- the FAISS row in this segment (0 … rows-1)
        id       INTEGER NOT NULL,     -- stable id: kept across updates, never given to another image
        gallery  INTEGER NOT NULL,     -- position in the manifest's `galleries` of the folder holding it; -1: none
        path     BLOB NOT NULL,        -- path under that gallery (absolute when gallery = -1), os.fsencode'd
        label    BLOB,                 -- NULL when it is the path's top-level folder ("" at the gallery's root)
        sha256   BLOB NOT NULL,        -- 32-byte content hash when embedded (empty: unreadable)
        size     INTEGER NOT NULL,     -- file size in bytes when embedded
        mtime_ns INTEGER NOT NULL      -- modification time (ns) when embedded
    )

Paths are stored under their gallery, and a label only when it is not the path's top-level
folder (it always is for `siamcli index`), so a row costs ≈ 95 bytes at 10^7 images instead of
≈ 125: with the compact ivfpq index, everything an index keeps stays under 400 bytes a vector.
Readers are given the galleries list to give back absolute paths and labels.
Why SQLite: a query names its k results by reading k rows through the primary key (a few
pages), not a whole table; an update reads every row once to learn what is indexed (path,
size, mtime), as git's index does, and hashes only the files whose size or time changed. The
file is opened read-only and `immutable` (no locks: nothing ever writes it again).

`items.csv` (id, path, label) is an export for people and pandas: written by full builds
(`--force`, the first build, compaction, `--merge`) and by `siamcli index --export-items`;
an update that changes the rows removes it rather than leave a stale one.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from siamcli.atomic import atomic_path
from siamcli.errors import CorruptArtifactError
from siamcli.hashing import file_sha256
from siamcli.index.hints import REBUILD

ITEMS_DB = "items.sqlite"
ITEMS_CSV = "items.csv"
ITEMS_COLUMNS = ["id", "path", "label"]
_SCHEMA = ("CREATE TABLE items (row INTEGER PRIMARY KEY, id INTEGER NOT NULL, gallery INTEGER NOT NULL, path BLOB NOT NULL, "
           "label BLOB, sha256 BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL)")
_COLUMNS = "id, gallery, path, label, sha256, size, mtime_ns"
_INSERT_CHUNK = 10_000


@dataclass(frozen=True, slots=True)  # slots: a million of them stay small
class IndexItem:
    id: int  # stable across --append / --prune
    path: str  # absolute path of the image
    label: str  # top-level folder under the gallery; "" for images at its root
    sha256: str  # content hash of the file when it was embedded ("" when unknown)
    size: int = -1  # file size when it was embedded (-1: unknown, always re-hashed)
    mtime_ns: int = -1  # its modification time then


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes ("" when it cannot be read: it then never matches)."""
    try:
        return file_sha256(path)
    except OSError:
        return ""


def _implied_label(relative: str) -> str:
    """The label a path under its gallery implies: its top-level folder ("" at the gallery's root)."""
    return relative.split(os.sep, 1)[0] if os.sep in relative else ""


def _stored(item: IndexItem, prefixes: list[str]) -> tuple[int, bytes, bytes | None]:
    """(gallery, path under it, label or None when the path implies it)."""
    for gallery, prefix in enumerate(prefixes):
        if item.path.startswith(prefix):
            relative = item.path[len(prefix):]
            return gallery, os.fsencode(relative), None if item.label == _implied_label(relative) else os.fsencode(item.label)
    return -1, os.fsencode(item.path), os.fsencode(item.label)


def _prefixes(galleries: list[str]) -> list[str]:
    return [os.path.join(gallery, "") for gallery in galleries]


def write_items(path: Path, items: Iterable[IndexItem], galleries: list[str]) -> int:
    """Write a new items.sqlite at `path` (inside a folder not yet visible); rows numbered 0, 1, …
    `galleries`: the manifest's gallery folders, which stored paths are made relative to."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = OFF")  # a new file in a temporary folder: the rename is the commit
        db.execute("PRAGMA synchronous = OFF")  # the caller fsyncs the finished file
        db.execute(_SCHEMA)
        prefixes = _prefixes(galleries)
        count = 0
        chunk: list[tuple] = []
        for item in items:
            chunk.append((count, item.id, *_stored(item, prefixes), bytes.fromhex(item.sha256), item.size, item.mtime_ns))
            count += 1
            if len(chunk) == _INSERT_CHUNK:
                db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", chunk)
                chunk.clear()
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", chunk)
        db.commit()
    return count


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise CorruptArtifactError(f"{path} is missing; the index is incomplete: {REBUILD}")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            yield db
    except sqlite3.DatabaseError as exc:
        raise CorruptArtifactError(f"{path} is not a readable items table ({exc}); the index is damaged: {REBUILD}") from exc


def _item(record: tuple, galleries: list[str]) -> IndexItem:
    item_id, gallery, stored, label, digest, size, mtime_ns = record
    path = os.fsdecode(stored)
    label = _implied_label(path) if label is None else os.fsdecode(label)
    if gallery >= 0:
        try:
            path = os.path.join(galleries[gallery], path)
        except IndexError:
            raise CorruptArtifactError(f"an items table names gallery {gallery} of {len(galleries)}; {REBUILD}") from None
    return IndexItem(id=int(item_id), path=path, label=label, sha256=bytes(digest).hex(), size=int(size), mtime_ns=int(mtime_ns))


def row_range(path: Path) -> tuple[int, int]:
    """(number of rows, 1 + the largest row): equal when rows are 0 … n-1, as they must be. Reads two pages."""
    with _reader(path) as db:
        low, high = db.execute("SELECT min(row), max(row) FROM items").fetchone()
        if low is None:
            return 0, 0
        # rows are a primary key (unique): min 0 and max n-1 with n rows ⇔ exactly 0 … n-1, so count(*)
        # (a scan of the table) is only needed when the ends look wrong.
        count = high + 1 if low == 0 else db.execute("SELECT count(*) FROM items").fetchone()[0]
        return int(count), int(high) + 1


def read_rows(path: Path, rows: Iterable[int], galleries: list[str]) -> dict[int, IndexItem]:
    """The items at the given rows (through the primary key: k rows cost k lookups, not a table scan)."""
    wanted = sorted(set(int(r) for r in rows))
    found: dict[int, IndexItem] = {}
    with _reader(path) as db:
        for start in range(0, len(wanted), 500):  # SQLite caps the number of bound parameters
            part = wanted[start:start + 500]
            marks = ",".join("?" * len(part))
            for row, *record in db.execute(f"SELECT row, {_COLUMNS} FROM items WHERE row IN ({marks})", part):
                found[int(row)] = _item(tuple(record), galleries)
    return found


def read_items(path: Path, galleries: list[str]) -> list[IndexItem]:
    """Every row of an items.sqlite, in row order (an update's or a server's full view)."""
    with _reader(path) as db:
        records = db.execute(f"SELECT {_COLUMNS} FROM items ORDER BY row").fetchall()
    return [_item(record, galleries) for record in records]


def write_items_csv(target: Path, items: Iterable[IndexItem]) -> None:
    """items.csv (id, path, label) for people and pandas, atomically."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(ITEMS_COLUMNS)
        for item in items:
            writer.writerow([item.id, item.path, item.label])
