"""What `siamcli cluster` is asked to do: its options and the fixed choice of method.

Nothing heavy is imported here: the CLI reads it to build `siamcli cluster --help`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields, replace

from siamcli.choices import Choice
from siamcli.errors import UserError

DEFAULT_K = 8  # neighbours per image: Chinese Whispers' best on held-out ORL identities (docs/cluster.md)
MAX_K = 1000
DEFAULT_OUT = "clusters"  # --out: a folder of that name in the current directory
SHEET_CLUSTERS = 12  # the contact sheet shows the largest clusters …
SHEET_THUMBNAILS = 10  # … and this many images of each, the representative first


class ClusterMethod(Choice):
    CHINESE_WHISPERS = "chinese-whispers"  # label propagation: each image takes its neighbours' weightiest label
    AVERAGE = "average"  # average linkage on the k-NN graph (scikit-learn), cut at the threshold
    COMPONENTS = "components"  # connected components (single linkage): the chaining reference


DEFAULT_METHOD = ClusterMethod.CHINESE_WHISPERS  # chosen by measurement (docs/cluster.md)


@dataclass(frozen=True)
class ClusterOptions:
    folder: str | None = None  # images to embed and cluster (recursively); or
    index: str | None = None  # an index whose stored vectors are clustered as they are
    model: str | None = None  # run dir or model.keras; None → runs/latest (FOLDER) or the index's model
    threshold: float | None = None  # cosine similarity; None → the run's calibrated threshold
    method: str = DEFAULT_METHOD.value
    k: int = DEFAULT_K
    out: str = DEFAULT_OUT  # clusters.csv and the contact sheet go here
    link_to: str | None = None  # one folder of symlinks per cluster
    force: bool = False  # with link_to: replace a folder of links an earlier run made
    score: bool = False  # compare with the identity sub-folders
    batch_size: int = 32
    seed: int = 0  # Chinese Whispers' visiting order


def validate_options(options: ClusterOptions) -> None:
    """Every check that needs no file: before any work starts."""
    if (options.folder is None) == (options.index is None):
        raise UserError("give a FOLDER of images to cluster, or --index INDEX_DIR to cluster an index's vectors (not both)")
    ClusterMethod.check(options.method, "--method")
    if not 1 <= options.k <= MAX_K:
        raise UserError(f"--k must be between 1 and {MAX_K}, got {options.k}")
    if options.threshold is not None and not 0.0 < options.threshold < 1.0:  # 0 or less would join unrelated images
        raise UserError(f"--threshold is a cosine similarity between 0 and 1 (exclusive), got {options.threshold}")
    if options.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.force and options.link_to is None:
        raise UserError("--force replaces the folder of links --link-to DIR made before; pass --link-to DIR too")


def command_line(options: ClusterOptions, **changes) -> str:
    """`siamcli cluster …` in backticks with every option of `options` (and `changes`) that is not
    the default, quoted for a POSIX shell: a hint that runs as printed."""
    options = replace(options, **changes)
    words = ["siamcli", "cluster"] + ([str(options.folder)] if options.folder is not None else [])
    defaults = ClusterOptions()
    for option in fields(ClusterOptions):
        value = getattr(options, option.name)
        if option.name == "folder" or value == getattr(defaults, option.name):
            continue
        flag = "--" + option.name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return "`" + " ".join(shlex.quote(word) for word in words) + "`"
