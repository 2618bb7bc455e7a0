"""Two `siamcli index` runs on one index: the second refuses clearly, nothing is corrupted."""

import shutil
import subprocess
import sys

from test_index_engine import build

from siamcli.index.lock import index_lock
from siamcli.index.store import load_index


def _index(run, gallery, *extra):
    return [sys.executable, "-m", "siamcli", "index", str(gallery), "--model", str(run), *extra]


def test_a_second_writer_is_refused_while_the_first_holds_the_index(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_run.parent.parent / "data", gallery)
    with index_lock(run / "index"):  # as a running `siamcli index` holds it
        proc = subprocess.run(_index(run, gallery), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "another `siamcli index`" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (run / "index").exists()


def _extra_gallery(root, label, source_images):
    """root/label/new_<j>.png: copies of `source_images` under a new identity, to append."""
    (root / label).mkdir(parents=True)
    for j, source in enumerate(source_images):
        shutil.copy(source, root / label / f"new_{j}.png")
    return sorted(str(path) for path in (root / label).iterdir())


def test_concurrent_appends_of_different_images_lose_nothing(tiny_run, tmp_path):
    """Two writers append different images to one index at the same time. Without the lock both
    would start from the same 30-row index and the later swap would drop the other's rows."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_run.parent.parent / "data", gallery)
    build(run, gallery)  # the index both writers append to (built in this process: only the racers need their own)
    original = {item.path for item in load_index(run / "index").items}
    assert len(original) == 30
    # Each writer appends its own further gallery folder, holding only its new images.
    additions = {
        "a": _extra_gallery(tmp_path / "extra_a", "new_a", sorted(gallery.glob("id_1/*.png"))),
        "b": _extra_gallery(tmp_path / "extra_b", "new_b", sorted(gallery.glob("id_2/*.png"))),
    }
    racers = {name: subprocess.Popen(_index(run, tmp_path / f"extra_{name}", "--append", "--add-gallery"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for name in additions}
    results = {}
    for name, proc in racers.items():
        _, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, err)

    succeeded = [name for name, (code, _) in results.items() if code == 0]
    refused = [name for name, (code, _) in results.items() if code != 0]
    assert succeeded, results
    for name in refused:
        code, err = results[name]
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "another `siamcli index`" in err, err

    loaded = load_index(run / "index")  # loads: the manifest, vectors and FAISS index agree
    paths = [item.path for item in loaded.items]
    expected = original.union(*(additions[name] for name in succeeded))
    assert set(paths) == expected  # nothing lost: every original row and every accepted addition
    assert len(paths) == len(expected) == sum(s.live for s in loaded.segments) == loaded.count  # each exactly once
    assert len({item.id for item in loaded.items}) == loaded.count
    labels = {item.path: item.label for item in loaded.items}
    for name in succeeded:
        assert {labels[path] for path in additions[name]} == {f"new_{name}"}
