"""Pairs into groups, and the one file each group keeps.

A group is a connected component of the graph whose edges are the duplicate pairs: union-find,
done by scipy's connected_components on the sparse pair graph (O(N + pairs)). Two files are in
one group when a chain of duplicate pairs joins them.

The file a group keeps (`--keep`):
    largest  the most pixels (width × height, as decoded); among equals the most bytes; then `first`
    oldest   the earliest modification time (mtime, to the nanosecond); among equals `first`
    first    the first by path, compared part by part (folder names, then the file name's characters)
A group is "exact" when all its files have the same bytes (sha256), else "near".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from siamcli.errors import UserError

KEEP_RULES = ("largest", "oldest", "first")


@dataclass(frozen=True)
class Group:
    paths: list[str]  # every file of the group, `keep` first, then by path
    keep: str
    kind: str  # "exact" | "near"

    @property
    def others(self) -> list[str]:
        return self.paths[1:]

    def to_json(self) -> dict:
        return {"paths": self.paths, "keep": self.keep, "kind": self.kind}


@dataclass
class Files:
    """What the keep rules read, one row per file (a graph node)."""

    paths: list[str]
    sha256: np.ndarray  # (n, 32) uint8
    pixels: np.ndarray  # (n,) int64
    size: np.ndarray  # (n,) int64
    mtime_ns: np.ndarray  # (n,) int64


def check_keep(rule: str) -> str:
    if rule not in KEEP_RULES:
        raise UserError(f"--keep {rule!r} is not a rule; use one of {', '.join(KEEP_RULES)}")
    return rule


def component_labels(count: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(count,) the component of each row in the graph of the pairs (union-find)."""
    graph = sparse.coo_array((np.ones(len(first), np.int8), (first, second)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def components(count: int, first: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    """The rows of each group of two or more, largest group first."""
    if count == 0 or len(first) == 0:
        return []
    labels = component_labels(count, first, second)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [rows for rows in np.split(order, bounds) if len(rows) > 1]
    groups.sort(key=lambda rows: (-len(rows), int(rows.min())))
    return groups


def make_groups(files: Files, rows_of_groups: list[np.ndarray], rule: str, keepable=None) -> list[Group]:
    """A Group per component; `keepable(row)` (optional) says which rows may be kept (--against: the indexed ones)."""
    groups = []
    for rows in rows_of_groups:
        candidates = [int(r) for r in rows if keepable is None or keepable(int(r))] or [int(r) for r in rows]
        keep = min(candidates, key=lambda row: _rank(files, row, rule))
        rest = sorted((int(r) for r in rows if r != keep), key=lambda row: _path_key(files.paths[row]))
        digests = files.sha256[rows]
        kind = "exact" if (digests == digests[0]).all() else "near"
        groups.append(Group([files.paths[keep], *(files.paths[r] for r in rest)], files.paths[keep], kind))
    return groups


def _rank(files: Files, row: int, rule: str) -> tuple:
    """Smaller is kept."""
    path = _path_key(files.paths[row])
    if rule == "largest":
        return -int(files.pixels[row]), -int(files.size[row]), path
    if rule == "oldest":
        return int(files.mtime_ns[row]), path
    return (path,)


def _path_key(path: str) -> tuple[str, ...]:
    return PurePath(path).parts
