"""`siamcli query`: finding a held-out photo's identity, outputs (table, --json, --plot), k larger
than the gallery, and every way an index or a query can be wrong → exit 2, one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, build_untrained_run, run_cli, write_test_calibration
from PIL import Image
from test_index_cli import invoke, one_line_error
from test_index_engine import build, copy_run, rewrite_checksums
from test_light_model import give_light_model, indexed_light_copy

pytestmark = pytest.mark.slow  # every test queries a ResNet50 run (built here or tiny_run)

IDENTITIES = [f"s{i}" for i in range(1, 9)]  # sample_data/ ships s1–s12


def query_json(*args) -> list:
    result = invoke("query", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """8 ORL identities from sample_data/: photos 1–9 in the gallery, photo 10 of each held out as a query."""
    base = tmp_path_factory.mktemp("faces")
    (base / "queries").mkdir()
    for identity in IDENTITIES:
        shutil.copytree(SAMPLE_DATA / "gallery" / identity, base / "gallery" / identity)
        shutil.copy(SAMPLE_DATA / "queries" / f"{identity}_10.png", base / "queries" / f"{identity}_10.png")
    run = build_untrained_run(base / "run", base / "gallery", val=[], train=IDENTITIES, image_size=32, embedding_dim=16)
    give_light_model(run)  # as the trainer writes it: queries embed without TensorFlow
    result = invoke("index", base / "gallery", "--model", run)
    assert result.exit_code == 0, result.stderr
    return base, run


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_run):
    """(run, data): a copy of the tiny run, its light model and a flat index over its 30 images. Read-only."""
    return indexed_light_copy(tiny_run, tmp_path_factory.mktemp("tinyq"))


def test_held_out_photo_finds_its_identity_at_rank_1(faces):
    base, run = faces
    answers = query_json(base / "queries", "--index", run / "index", "--k", "3")
    assert len(answers) == len(IDENTITIES)
    for answer in answers:
        identity = Path(answer["query"]).name.split("_")[0]
        assert answer["results"][0]["label"] == identity, answer
        assert [r["rank"] for r in answer["results"]] == [1, 2, 3]
        assert set(answer["results"][0]) == {"rank", "id", "path", "label", "similarity"}  # no threshold: no "match"
        similarities = [r["similarity"] for r in answer["results"]]
        assert similarities == sorted(similarities, reverse=True)


def test_table_output_and_plot(faces, tmp_path):
    base, run = faces
    plot = tmp_path / "neighbours.png"
    result = invoke("query", base / "queries" / "s1_10.png", base / "queries" / "s2_10.png", "--model", run, "--k", "4", "--plot", plot)
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr and f"plot written to {plot}" in result.stdout
    assert "rank" in result.stdout and "similarity" in result.stdout and "s1" in result.stdout and "s2" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = png_size(plot)
    assert width > height > 100  # two rows of 1 + 4 thumbnails


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_a_plot_of_more_queries_than_it_holds_draws_the_first_and_says_so(tiny_index, tmp_path):
    run, data = tiny_index
    first = [data / f"id_{i}" for i in range(4)]  # 20 images: as many as one picture holds
    assert invoke("query", *first, "--model", run, "--k", "2", "--plot", tmp_path / "twenty.png").exit_code == 0
    result = invoke("query", data, "--model", run, "--k", "2", "--plot", tmp_path / "thirty.png", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 30  # every query is answered; only the picture is bounded
    assert result.stderr.splitlines() == [f"warning: --plot {tmp_path / 'thirty.png'} draws the first 20 of 30 queries; "
                                          "--plot DIR/ draws one picture per query"]
    (width, height), (twenty_width, twenty_height) = png_size(tmp_path / "thirty.png"), png_size(tmp_path / "twenty.png")
    assert width == twenty_width and twenty_height < height < twenty_height * 21 / 20  # 20 rows and a title line


def test_a_plot_folder_gets_one_picture_per_query_in_order(tiny_index, tmp_path):
    run, data = tiny_index
    folder = tmp_path / "plots"
    result = invoke("query", data / "id_0", data / "id_1", "--model", run, "--k", "3", "--plot", f"{folder}/", "--json")
    assert result.exit_code == 0, result.stderr
    queries = [Path(answer["query"]) for answer in json.loads(result.stdout)]
    assert sorted(p.name for p in folder.iterdir()) == [f"{n:02d}_{q.stem}.png" for n, q in enumerate(queries, start=1)]
    for picture in folder.iterdir():
        width, height = png_size(picture)
        assert width > 3 * height  # one row: the query and its 3 neighbours
    assert "warning" not in result.stderr
    again = invoke("query", data / "id_2" / "img_0.png", "--model", run, "--plot", folder)  # an existing folder, no slash
    assert again.exit_code == 0, again.stderr
    assert (folder / "1_img_0.png").is_file() and "1 plot(s) written to" in again.stdout


def test_k_larger_than_the_gallery_returns_all_of_it_with_a_note(tiny_index):
    run, data = tiny_index
    result = invoke("query", data / "id_3" / "img_2.png", "--model", run, "--k", "100", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer) == 1 and len(answer[0]["results"]) == 30
    assert len({r["id"] for r in answer[0]["results"]}) == 30
    assert answer[0]["results"][0]["path"] == str(data / "id_3" / "img_2.png")  # an indexed image finds itself
    assert answer[0]["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert "larger than the gallery" in result.stderr


def test_match_column_follows_the_calibrated_threshold(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    give_light_model(run)
    threshold = 0.0004  # squared distance; similarity ≥ 0.9998
    write_test_calibration(run, threshold)
    build(run, data)
    answers = query_json(data / "id_0", "--model", run, "--k", "5")
    assert len(answers) == 5
    for answer in answers:
        assert answer["results"][0]["match"] is True  # itself
        for row in answer["results"]:
            assert row["match"] == (row["similarity"] >= 1 - threshold / 2 - 1e-6)
    table = invoke("query", data / "id_0" / "img_0.png", "--model", run)
    assert "match" in table.stdout and "0.9998" in table.stdout


def test_an_unreliable_or_stale_calibration_shows_no_match_column(tmp_path, tiny_run):
    run, data = copy_run(tiny_run, tmp_path)
    give_light_model(run)
    build(run, data)
    write_test_calibration(run, 0.5, reliable=False)
    result = invoke("query", data / "id_0" / "img_0.png", "--model", run, "--json")
    assert result.exit_code == 0, result.stderr
    assert "match" not in json.loads(result.stdout)[0]["results"][0]
    assert "not reliable" in result.stderr and "2 identities" in result.stderr
    write_test_calibration(run, 0.5, model_sha256="0" * 64)  # measured on another model
    result = invoke("query", data / "id_0" / "img_0.png", "--model", run, "--json")
    assert "match" not in json.loads(result.stdout)[0]["results"][0] and "another model" in result.stderr


def test_bad_queries_are_one_line_errors(tiny_index, tmp_path):
    run, data = tiny_index
    one_line_error(invoke("query", tmp_path / "missing.png", "--model", run), "missing.png", "not found")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    one_line_error(invoke("query", corrupt, "--model", run), "cannot read query image", "corrupt.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("query", empty, "--model", run), "holds no images")
    one_line_error(invoke("query", data / "id_0" / "img_0.png", "--model", run, "--k", "0"), "--k")
    one_line_error(invoke("query", data / "id_0" / "img_0.png", "--index", tmp_path / "no_index"), "no index at")


def test_a_bad_file_among_several_is_skipped_with_a_warning_naming_it(tiny_index, tmp_path):
    run, data = tiny_index
    good = data / "id_0" / "img_0.png"
    broken = [tmp_path / "broken.png", tmp_path / "also_broken.jpg"]
    for path in broken:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = invoke("query", good, broken[0], "--model", run, "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [answer["query"] for answer in answers] == [str(good)] and answers[0]["results"][0]["path"] == str(good)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(broken[0]) in warnings[0] and "not a readable image" in warnings[0], result.stderr
    one_line_error(invoke("query", *broken, "--model", run), "none of the query images could be read", *map(str, broken))


def _copy_index(tiny_index, tmp_path) -> tuple[Path, Path, Path]:
    run, data = tiny_index
    work = Path(shutil.copytree(run, tmp_path / "run"))
    return work, data, work / "index"


def test_damaged_or_inconsistent_index_is_exit_2(tiny_index, tmp_path):
    work, data, index_dir = _copy_index(tiny_index, tmp_path)
    image = data / "id_0" / "img_0.png"
    assert invoke("query", image, "--index", index_dir).exit_code == 0
    raw = (index_dir / "index.faiss").read_bytes()
    (index_dir / "index.faiss").write_bytes(raw[:-100])  # truncated
    one_line_error(invoke("query", image, "--index", index_dir), "index.faiss", "--force")
    rewrite_checksums(index_dir)  # even when the manifest agrees, FAISS's read error is caught
    one_line_error(invoke("query", image, "--index", index_dir), "index.faiss", "damaged or truncated")
    (index_dir / "index.faiss").write_bytes(raw)
    rewrite_checksums(index_dir)
    assert invoke("query", image, "--index", index_dir).exit_code == 0
    import sqlite3

    saved = (index_dir / "items.sqlite").read_bytes()
    with sqlite3.connect(index_dir / "items.sqlite") as db:
        db.execute("DELETE FROM items WHERE row >= 27")  # rows ≠ ntotal
    one_line_error(invoke("query", image, "--index", index_dir), "items.sqlite")
    rewrite_checksums(index_dir)
    one_line_error(invoke("query", image, "--index", index_dir), "items.sqlite holds 27 rows, the manifest 30")
    (index_dir / "items.sqlite").write_bytes(saved)
    rewrite_checksums(index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["embedding_dim"] = 8  # wrong dimension
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(invoke("query", image, "--index", index_dir), "dimension 16")


def test_a_different_model_is_refused(tiny_index, tmp_path):
    work, data, index_dir = _copy_index(tiny_index, tmp_path)
    image = data / "id_0" / "img_0.png"
    other = build_untrained_run(tmp_path / "other", data, val=[], train=[], seed=7)
    one_line_error(invoke("query", image, "--index", index_dir, "--model", other), "not the model", "fingerprint")
    # The run's model.keras retrained (replaced) after the index was built.
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["model_path"] = str(work / "model.keras")
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(other / "model.keras", work / "model.keras")
    one_line_error(invoke("query", image, "--index", index_dir), "not the model")


def test_subprocess_defaults_to_runs_latest_and_prints_only_json(tiny_index, tmp_path):
    run, data = tiny_index
    (tmp_path / "runs").mkdir()
    shutil.copytree(run, tmp_path / "runs" / "r1")
    (tmp_path / "runs" / "latest").symlink_to("r1")
    completed = run_cli("query", str(data / "id_4" / "img_1.png"), "--k", "3", "--json", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer[0]["results"][0]["path"] == str(data / "id_4" / "img_1.png")
    assert [r["label"] for r in answer[0]["results"]] == ["id_4"] * 3
    assert "oneDNN" not in completed.stderr and "Traceback" not in completed.stderr
