"""The index knows its gallery: deleted photos are named, never silently served; the same
photos in another folder are not indexed twice unless the user says why."""

from __future__ import annotations

import json
import shutil

import pytest
from test_index_cli import index_json, invoke, one_line_error
from test_index_engine import copy_run

pytestmark = pytest.mark.slow  # builds indexes with the tiny ResNet50 run


def test_a_deleted_photo_is_named_by_append_and_flagged_by_query(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    index_json(data, "--model", run)
    gone = data / "id_2" / "img_1.png"
    query_image = tmp_path / "query.png"
    shutil.copy(gone, query_image)
    gone.unlink()

    result = invoke("index", data, "--model", run, "--append")
    assert result.exit_code == 0, result.stderr
    assert "1 indexed file is gone" in result.stderr and str(gone) in result.stderr and "--prune" in result.stderr

    answered = invoke("query", query_image, "--model", run, "--json", "--k", "3")
    first = json.loads(answered.stdout)[0]["results"][0]
    assert first["path"] == str(gone) and first["missing"] is True
    assert all("missing" not in row for row in json.loads(answered.stdout)[0]["results"][1:])
    table = invoke("query", query_image, "--model", run, "--k", "1")  # off a terminal a row is never folded
    assert any(str(gone) in line and "(file gone)" in line for line in table.stdout.splitlines()), table.stdout
    # The hint names this index and model, so it prunes them as printed, not runs/latest's.
    hint = f"`siamcli index {data} --model {run / 'model.keras'} --out {run / 'index'} --prune`"
    assert f"1 answered file gone since indexing; drop it with {hint}" in table.stderr, table.stderr

    index_json(data, "--model", run, "--prune")
    answered = invoke("query", query_image, "--model", run, "--json", "--k", "30")
    assert str(gone) not in {row["path"] for row in json.loads(answered.stdout)[0]["results"]}


def test_append_from_another_folder_is_refused_unless_moved_or_added(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    index_json(data, "--model", run)
    copy = shutil.copytree(data, tmp_path / "copy")

    one_line_error(invoke("index", copy, "--model", run, "--append"), "--moved", "--add-gallery", str(data))
    assert json.loads((run / "index" / "manifest.json").read_text())["count"] == 30  # nothing changed

    moved = index_json(copy, "--model", run, "--append", "--moved")
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    assert moved["count"] == 30 and manifest["galleries"] == [str(copy)]  # same photos: not added again
    items = (run / "index" / "items.csv").read_text()  # --moved rewrites the index, export included
    assert str(copy) in items and str(data) + "/" not in items  # stored paths rewritten

    added = index_json(data, "--model", run, "--append", "--add-gallery")
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    assert added["count"] == 60 and manifest["galleries"] == [str(copy), str(data)]
    assert index_json(data, "--model", run, "--append")["count"] == 60  # a known folder: no option needed


def test_moved_and_add_gallery_need_append_and_exclude_each_other(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    one_line_error(invoke("index", data, "--model", run, "--moved"), "--append")
    one_line_error(invoke("index", data, "--model", run, "--append", "--moved", "--add-gallery"), "exclude")
