"""Moving the duplicates out, the record of what moved, and undoing it. Nothing is ever deleted.

`--move-to DIR` moves every file a group does not keep to DIR/<its path under FOLDER>. Before
the first move, every target is checked (none may exist: nothing is overwritten) and the record
— DIR/dedupe-record-<time>.json, every planned move with the file's sha256 and size — is written
(atomically, as every artifact). Each move is a hard link at the target (which fails rather
than replace an existing file) and then the removal of the source name, so the file's bytes
never move and never exist nowhere; the record is rewritten as moves finish, at most every
CHECKPOINT_SECONDS and at the end. A move interrupted anywhere (Ctrl-C, a kill, a full disk)
therefore leaves a record that names every file that may have moved, and `--undo` reads the
truth from the disk, not from the record's states: a file at its target and not at its source
moved; at both (the same file: stopped between link and unlink) it moved halfway and is put back.

`--undo RECORD` restores each moved file to its source the same way, after checking them all:
if any source path is now taken by another file, it refuses (one line) and restores nothing.
A file changed since the move (another sha256) is left where it is, with a warning. Undo can
be run again after an interruption; files already back are skipped.

DIR must be outside FOLDER (it would be scanned next time) and on the same file system (a move
is a rename there; across file systems it would be a copy).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from siamcli.atomic import write_json
from siamcli.errors import CorruptArtifactError, Interrupted, UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.hashing import file_sha256
from siamcli.jsonio import read_json

RECORD_FORMAT = "siamcli-dedupe-record/1"
CHECKPOINT_SECONDS = 1.0
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK)


@dataclass
class Move:
    source: str  # absolute path under FOLDER
    target: str  # absolute path under DIR
    sha256: str
    size: int
    state: str = "planned"  # planned | moved | restored

    def to_json(self) -> dict:
        return {"from": self.source, "to": self.target, "sha256": self.sha256, "bytes": self.size, "state": self.state}


@dataclass
class UndoOutcome:
    restored: list[Move]
    already_back: int
    notes: list[str]


def undo_command(record: Path) -> str:
    import shlex

    return f"`siamcli dedupe --undo {shlex.quote(str(record))}`"


def check_move_to(folder: Path, move_to: Path) -> None:
    """UserError unless move_to can receive moves from folder: a folder (or none yet) outside it, on its file system."""
    folder, move_to = folder.resolve(), move_to.resolve()
    if move_to.exists() and not move_to.is_dir():
        raise UserError(f"--move-to {move_to} is a file; give a folder (it is created if missing)")
    if move_to == folder or folder in move_to.parents:
        raise UserError(f"--move-to {move_to} is inside {folder}, which would scan the moved files again; choose a folder outside it")
    existing = next(p for p in (move_to, *move_to.parents) if p.exists())
    if os.stat(existing).st_dev != os.stat(folder).st_dev:
        raise UserError(f"--move-to {move_to} is on another file system than {folder}, where moving would mean copying; "
                        "choose a folder on the same disk")


def plan_moves(sources: list[tuple[str, str, int]], folder: Path, move_to: Path) -> list[Move]:
    """The move of each (path, sha256, bytes) to move_to/<path under folder>; UserError when
    move_to cannot take them all (check_move_to, or a target taken)."""
    check_move_to(folder, move_to)
    move_to = move_to.resolve()
    # absolute, not resolved: a file reached through a linked folder moves by its name under FOLDER
    named = os.path.abspath(folder)
    moves = [Move(os.path.abspath(path), str(move_to / os.path.relpath(os.path.abspath(path), named)), sha, size)
             for path, sha, size in sources]
    taken = [m.target for m in moves if os.path.lexists(m.target)]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise UserError(f"--move-to would overwrite {taken[0]}{more}; nothing was moved: choose an empty folder or move those files away")
    return moves


def new_record_path(move_to: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates = (move_to / f"dedupe-record-{stamp}{'' if n == 0 else f'-{n}'}.json" for n in range(1000))
    return next(path for path in candidates if not path.exists())


def move_files(moves: list[Move], folder: Path, move_to: Path, events: Events = NO_EVENTS) -> Path:
    """Carry out the moves, keeping the record; returns the record's path."""
    move_to.mkdir(parents=True, exist_ok=True)
    record = new_record_path(move_to.resolve())
    header = {"format": RECORD_FORMAT, "folder": str(folder.resolve()), "move_to": str(move_to.resolve()),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write(record, header, moves)
    events.stage("moving files", len(moves))
    checkpoint = _Checkpoints(record, header, moves)
    try:
        for move in moves:
            _relink(move.source, move.target)
            move.state = "moved"
            events.advance(1)
            checkpoint.tick()
    except KeyboardInterrupt:
        _write(record, header, moves)
        raise Interrupted(f"interrupted while moving; {_moved(moves)} of {len(moves)} files moved, all listed in {record}: "
                          f"undo with {undo_command(record)}") from None
    except OSError as exc:
        _write(record, header, moves)
        raise UserError(f"cannot move {move.source} to {move.target} ({exc.strerror or exc}); {_moved(moves)} files moved before it, "
                        f"listed in {record}: undo with {undo_command(record)}") from exc
    _write(record, header, moves)
    return record


def undo(record: Path, events: Events = NO_EVENTS) -> UndoOutcome:
    """Put back every file the record moved (see the module docstring)."""
    header, moves = read_record(record)
    notes, todo, back, conflicts = [], [], 0, []
    for move in moves:
        at_source, at_target = os.path.lexists(move.source), os.path.lexists(move.target)
        if at_target and at_source and not _same_file(move.source, move.target):
            conflicts.append(move)
        elif at_target:
            todo.append(move)
        elif at_source:
            back += 1
        else:
            notes.append(f"{move.source} is neither there nor at {move.target}; it was moved or deleted since: left as it is")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UserError(f"cannot undo: restoring {conflicts[0].target} would overwrite the file now at {conflicts[0].source}{more}; "
                        f"nothing was restored: move those files away, then run {undo_command(record)} again")
    restored = _restore(record, header, moves, todo, notes, events)
    return UndoOutcome(restored, back, notes)


def _restore(record: Path, header: dict, moves: list[Move], todo: list[Move], notes: list[str], events: Events) -> list[Move]:
    events.stage("restoring files", len(todo))
    restored, checkpoint = [], _Checkpoints(record, header, moves)
    try:
        for move in todo:
            if os.path.lexists(move.source):  # stopped between link and unlink: the source is this very file
                os.unlink(move.target)
            elif not os.path.islink(move.target) and file_sha256(move.target) != move.sha256:
                notes.append(f"{move.target} changed since it was moved (another sha256): left there")
                continue
            else:
                _relink(move.target, move.source)
            move.state = "restored"
            restored.append(move)
            events.advance(1)
            checkpoint.tick()
    except KeyboardInterrupt:
        _write(record, header, moves)
        raise Interrupted(f"interrupted while restoring; {len(restored)} files restored so far: run {undo_command(record)} again") from None
    header = {**header, "undone": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write(record, header, moves)
    return restored


def read_record(record: Path) -> tuple[dict, list[Move]]:
    data = read_json(record, "dedupe record", missing="give the record `siamcli dedupe --move-to` wrote (DIR/dedupe-record-….json)")
    if data.get("format") != RECORD_FORMAT or not isinstance(data.get("moves"), list):
        raise CorruptArtifactError(f"{record} is not a dedupe record ({RECORD_FORMAT}); give the record `siamcli dedupe --move-to` wrote")
    try:
        moves = [Move(str(m["from"]), str(m["to"]), str(m["sha256"]), int(m["bytes"]), str(m.get("state", "planned")))
                 for m in data["moves"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptArtifactError(f"{record} has a damaged move entry ({exc}); restore the moved files by hand from its list") from exc
    return {k: v for k, v in data.items() if k != "moves"}, moves


def _relink(source: str, target: str) -> None:
    """Give the file at `source` the name `target` (never replacing a file there), then drop `source`."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)  # EEXIST rather than overwrite
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):  # a file system without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "file exists", target) from exc
        os.rename(source, target)
        return
    os.unlink(source)


def _same_file(first: str, second: str) -> bool:
    """The two names are links to one file (the names themselves: a symbolic link is not followed)."""
    a, b = os.lstat(first), os.lstat(second)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _Checkpoints:
    """Rewrites the record as the moves' states change, at most every CHECKPOINT_SECONDS."""

    def __init__(self, record: Path, header: dict, moves: list[Move]):
        self.record, self.header, self.moves, self.last = record, header, moves, time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self.last >= CHECKPOINT_SECONDS:
            _write(self.record, self.header, self.moves)
            self.last = time.monotonic()


def _write(record: Path, header: dict, moves: list[Move]) -> None:
    write_json(record, {**header, "moves": [m.to_json() for m in moves]})


def _moved(moves: list[Move]) -> int:
    return sum(m.state == "moved" for m in moves)
