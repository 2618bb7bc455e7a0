"""Two `siamcli index` runs on one index: the second refuses clearly, nothing is corrupted."""

import shutil
import subprocess
import sys

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


def test_concurrent_appends_leave_one_consistent_index(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    gallery = tmp_path / "gallery"
    shutil.copytree(tiny_run.parent.parent / "data", gallery)
    first = subprocess.run(_index(run, gallery), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (gallery / "id_0" / "copy_a.png").write_bytes((gallery / "id_1" / "img_0.png").read_bytes())
    racers = [subprocess.Popen(_index(run, gallery, "--append"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in racers]
    for code, err in results:
        assert code == 0 or (code == 2 and "another `siamcli index`" in err), err
    assert any(code == 0 for code, _ in results)
    loaded = load_index(run / "index")
    assert loaded.count == 31 and loaded.index.ntotal == 31  # 30 images + the new one, exactly once
