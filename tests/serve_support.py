"""Shared by the serve tests: real `siamcli serve` processes on free loopback ports, and one
served sample gallery (sample_data/gallery, the session's untrained 32 px `tiny_run` model)
for the whole session.

A server writes its log to a file (a pipe nobody reads would fill and block it); it is started
with `--port 0` and announces its URL on that log, so ports never race.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import REPO

SAMPLE = REPO / "sample_data"
GALLERY = SAMPLE / "gallery"
QUERIES = SAMPLE / "queries"
URL_LINE = re.compile(r"on (http://[\w.\[\]:]+)")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def start_server(*args: str, log: Path, env: dict | None = None, timeout: float = 180) -> Server:
    """`siamcli serve --port 0 ARGS...` in a subprocess; returns once /readyz answers 200."""
    handle = open(log, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "siamcli", "serve", "--port", "0", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=handle,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    handle.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = URL_LINE.search(log.read_text())
        if found:
            server = Server(process, found.group(1), log)
            if _ready(server.url):
                return server
        if process.poll() is not None:
            raise AssertionError(f"siamcli serve exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"siamcli serve did not become ready in {timeout} s:\n{log.read_text()}")


def wait_for(check, timeout: float = 60, every: float = 0.2):
    """Poll `check` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout} s")


def in_flight(url: str) -> int:
    """Requests the server has begun and not answered, this scrape of /metrics included."""
    found = re.search(r"^siamcli_requests_in_flight (\d+)$", httpx.get(f"{url}/metrics", timeout=30).text, re.M)
    assert found, "no siamcli_requests_in_flight in /metrics"
    return int(found.group(1))


def refuses_connections(url: str) -> bool:
    """The server no longer listens (it is shutting down, or gone)."""
    try:
        httpx.get(f"{url}/healthz", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def served_count(url: str) -> int:
    return httpx.get(f"{url}/api/v1/index", timeout=30).json()["count"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def indexed_run(tiny_run: Path, base: Path, gallery: Path = GALLERY) -> Path:
    """A copy of the session's tiny run (untrained, 32 px) with its index over `gallery`."""
    from siamcli.index.build import IndexOptions, build_index

    run = base / "run"
    run.mkdir(parents=True)
    for name in ("model.keras", "config.json", "split.json"):
        shutil.copy(tiny_run / name, run / name)
    build_index(IndexOptions(gallery=str(gallery), model=str(run)))
    return run


_SHARED: dict = {}


def shared_run(tmp_path_factory, tiny_run: Path) -> Path:
    """The run the shared server serves: its index covers a copy of sample_data/gallery."""
    if "run" not in _SHARED:
        base = tmp_path_factory.mktemp("served")
        gallery = Path(shutil.copytree(GALLERY, base / "gallery"))
        _SHARED.update(base=base, gallery=gallery, run=indexed_run(tiny_run, base, gallery))
    return _SHARED["run"]


def shared_server(tmp_path_factory, tiny_run: Path) -> tuple[Server, Path, Path]:
    """(server, run, gallery): a copy of sample_data/gallery, indexed and served once per session
    (again only if a test stopped it). Small queue and body limits make overload and 413 cheap to
    reach; the index directory is watched every 0.2 s. Tests that change the gallery or the index
    put them back as they were. Stopped by `stop_shared`."""
    shared_run(tmp_path_factory, tiny_run)
    server = _SHARED.get("server")
    if server is None or server.process.poll() is not None:
        _SHARED["server"] = start_server(
            "--index", str(_SHARED["run"] / "index"), "--max-queue", "4", "--max-batch", "4", "--max-upload-mb", "1",
            "--watch-interval", "0.2", log=_SHARED["base"] / f"server-{time.monotonic_ns()}.log")
    return _SHARED["server"], _SHARED["run"], _SHARED["gallery"]


def stop_shared() -> None:
    server = _SHARED.pop("server", None)
    if server is not None:
        server.stop()
