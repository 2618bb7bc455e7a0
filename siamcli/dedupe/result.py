"""What `siamcli dedupe` was asked (DedupeOptions) and what it found (DedupeResult).

The result's JSON (`--json`) is an object: folder, method ("perceptual" | "embedding"),
threshold (what decided "near", with its values), counts (images, groups, exact_groups,
near_groups, to_move, skipped), pairs (pairs found by each rule), groups — a list of
{"paths": [...], "keep": PATH, "kind": "exact" | "near"}, `keep` first in `paths` — and the
skipped files; with --against, also `indexed` (the files of the groups that are in the index).
`imagededup_map` is imagededup's find_duplicates answer for the same groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.data.scan import Skipped
from siamcli.dedupe.groups import Files, Group, components, make_groups
from siamcli.dedupe.keys import Keys
from siamcli.dedupe.pairs import Pairs, joined


@dataclass
class DedupeOptions:
    keep: str = "largest"
    model: str | None = None  # a run: compare embeddings instead of perceptual hashes
    against: str | None = None  # an index folder: compare with its gallery too
    threshold: float | None = None  # cosine similarity for the embedding methods (default EMBEDDING_MIN)
    crops: bool | None = None  # the perceptual method's crop check (None: on for that method)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 32


@dataclass
class DedupeResult:
    folder: Path
    method: str  # "perceptual" | "embedding"
    threshold: dict
    files: Files  # the folder's images read (the first `images` rows), then indexed images in its groups
    images: int
    groups: list[Group]
    skipped: list[Skipped]
    pairs: dict  # pairs found, by rule
    indexed: set[str] = field(default_factory=set)  # paths that are in the --against index (never moved)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return self.files.paths[:self.images]

    def movable(self) -> list[tuple[str, str, int]]:
        """(path, sha256, bytes) of every file a group does not keep and that may move (not an indexed one)."""
        row = {path: r for r, path in enumerate(self.files.paths)}
        return [(path, self.files.sha256[row[path]].tobytes().hex(), int(self.files.size[row[path]]))
                for group in self.groups for path in group.others if path not in self.indexed]

    def counts(self) -> dict:
        exact = sum(group.kind == "exact" for group in self.groups)
        return {"images": self.images, "groups": len(self.groups), "exact_groups": exact, "near_groups": len(self.groups) - exact,
                "to_move": len(self.movable()), "skipped": len(self.skipped)}

    def to_json(self) -> dict:
        data = {"folder": str(self.folder), "method": self.method, "threshold": self.threshold, "counts": self.counts(),
                "pairs": self.pairs, "groups": [g.to_json() for g in self.groups],
                "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped]}
        if self.against_json():
            data["indexed"] = self.against_json()
        return data

    def against_json(self) -> list[str]:
        grouped = {path for group in self.groups for path in group.paths}
        return sorted(grouped & self.indexed)

    def imagededup_map(self) -> dict[str, list[str]]:
        """imagededup's find_duplicates answer: every image under the folder, by its path relative
        to the folder → the other files of its group (an indexed file outside the folder: its absolute path)."""
        root = os.path.abspath(self.folder)

        def name(path: str) -> str:  # absolute, not resolved: a file in a linked folder keeps its name under FOLDER
            absolute = os.path.abspath(path)
            return os.path.relpath(absolute, root) if absolute.startswith(os.path.join(root, "")) else absolute

        answer = {name(path): [] for path in self.paths}
        for group in self.groups:
            names = [name(path) for path in group.paths]
            for path in names:
                if path in answer:
                    answer[path] = [other for other in names if other != path]
        return answer


def build_result(folder: Path, method: str, threshold: dict, keys: Keys, skipped: list[Skipped], found: list[Pairs], counts: dict,
                 options: DedupeOptions, extra: Files | None = None, indexed_rows: set[int] | None = None) -> DedupeResult:
    """The groups of the pairs `found` among the keys' rows (then `extra` rows: indexed files)."""
    files = Files(keys.paths, keys.sha256, keys.pixels, keys.size, keys.mtime_ns)
    if extra is not None:
        files = Files(files.paths + extra.paths, *(_stack(getattr(files, name), getattr(extra, name))
                                                   for name in ("sha256", "pixels", "size", "mtime_ns")))
    keepable = None if not indexed_rows else indexed_rows.__contains__
    groups = make_groups(files, components(len(files.paths), *joined(found)), options.keep, keepable)
    indexed = {files.paths[row] for row in indexed_rows or ()}
    return DedupeResult(folder, method, threshold, files, keys.count, groups, [*skipped, *keys.failures], counts, indexed)


def _stack(first, second):
    import numpy as np

    return np.concatenate([first, second])
