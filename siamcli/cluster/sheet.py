"""The contact sheet: one row per cluster, largest first, its most central images left to right.

Bounded whatever the folder holds: the first SHEET_CLUSTERS clusters × SHEET_THUMBNAILS
images, CELL pixels each (≈ 1000 × 1300 pixels at most), so only those images are decoded.
The representative has a blue frame; a file that no longer decodes is a grey cell saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from siamcli.atomic import atomic_path
from siamcli.cluster.options import SHEET_CLUSTERS, SHEET_THUMBNAILS
from siamcli.cluster.summary import Cluster
from siamcli.data.decode import DecodeError, decode_image

CELL = 96  # thumbnail side, pixels
CAPTION = 150  # width of the caption left of each row
GAP = 4
FRAME = 3
BACKGROUND, INK, REPRESENTATIVE, MISSING = (255, 255, 255), (20, 20, 20), (31, 119, 180), (200, 200, 200)
SHEET_FILE = "contact_sheet.png"


def write_contact_sheet(target: Path, clusters: Sequence[Cluster], paths: Sequence[str],
                        rows: int = SHEET_CLUSTERS, columns: int = SHEET_THUMBNAILS) -> Path:
    """Draw the first `rows` clusters (each up to `columns` images) into a PNG at `target`, atomically."""
    shown = list(clusters[:rows])
    width = CAPTION + columns * (CELL + GAP) + GAP
    height = max(1, len(shown)) * (CELL + GAP) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for row, cluster in enumerate(shown):
        top = GAP + row * (CELL + GAP)
        cohesion = "" if cluster.cohesion is None else f"\ncohesion {cluster.cohesion:.3f}"
        draw.multiline_text((GAP, top + GAP), f"cluster {cluster.id}\n{cluster.size} image{'s' * (cluster.size != 1)}{cohesion}",
                            fill=INK, font=font)
        for column, member in enumerate(cluster.members[:columns]):
            left = CAPTION + column * (CELL + GAP)
            if column == 0:
                draw.rectangle((left - FRAME, top - FRAME + 1, left + CELL + FRAME - 1, top + CELL + FRAME - 2), fill=REPRESENTATIVE)
            sheet.paste(_thumbnail(paths[member], font), (left, top))
    with atomic_path(target, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return target


def _thumbnail(path: str, font) -> Image.Image:
    """The image scaled to fit CELL × CELL (centred), or a grey cell saying it cannot be read."""
    cell = Image.new("RGB", (CELL, CELL), BACKGROUND)
    try:
        picture = Image.fromarray(decode_image(path))
    except DecodeError:
        cell.paste(MISSING, (0, 0, CELL, CELL))
        ImageDraw.Draw(cell).text((6, CELL // 2 - 6), "unreadable", fill=INK, font=font)
        return cell
    picture.thumbnail((CELL, CELL), Image.BILINEAR)
    cell.paste(picture, ((CELL - picture.width) // 2, (CELL - picture.height) // 2))
    return cell
