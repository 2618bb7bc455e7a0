"""Index changes while serving, and stopping, on the session's real server (its gallery is a copy).

`siamcli index --append` while a client loops on queries: no failed request, and the new image
is found afterwards (`--prune` then puts the gallery back). An index built with another model is
refused (the old one keeps serving, /readyz and the log say why). SIGTERM: the request in flight
is answered, then the process exits 0. The CLI runs in-process (Typer's runner): the same code
as the command, without a second TensorFlow start-up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_support import QUERIES, in_flight, refuses_connections, shared_server, stop_shared, wait_for
from test_index_cli import invoke


@pytest.fixture(scope="module")
def swap(tmp_path_factory, tiny_run):
    """(server, run, gallery) of the session's shared server; stopped at the end of the session."""
    yield shared_server(tmp_path_factory, tiny_run)
    stop_shared()


class LoopingClient(threading.Thread):
    """Queries the server back to back until stopped; records every status (or error)."""

    def __init__(self, url: str, image: Path):
        super().__init__(daemon=True)
        self.url, self.image = url, image
        self.outcomes: list = []
        self.counts: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.post("/api/v1/query", files=[("images", (self.image.name, self.image.read_bytes()))], data={"k": "1000"})
                    self.outcomes.append(answer.status_code)
                    if answer.status_code == 200:
                        self.counts.append(len(answer.json()[0]["results"]))
                except httpx.HTTPError as exc:
                    self.outcomes.append(repr(exc))


def test_append_while_a_client_loops_has_no_failed_request(swap):
    server, run, gallery = swap
    before = httpx.get(f"{server.url}/api/v1/index").json()["count"]
    new = gallery / "newcomer" / "1.png"
    new.parent.mkdir()
    shutil.copy(QUERIES / "s9_10.png", new)
    client = LoopingClient(server.url, QUERIES / "s2_10.png")
    client.start()
    try:
        wait_for(lambda: len(client.outcomes) >= 3)
        appended = invoke("index", gallery, "--model", run, "--append", "--json")
        assert appended.exit_code == 0, appended.stderr
        update = json.loads(appended.stdout)
        assert update["segments"] == 2 and update["rewrite_reason"] == ""  # a new segment, the files in use untouched
        wait_for(lambda: httpx.get(f"{server.url}/api/v1/index").json()["count"] == before + 1)
        seen = len(client.outcomes)
        wait_for(lambda: len(client.outcomes) >= seen + 3)
    finally:
        client.stopping.set()
        client.join(timeout=60)
    assert set(client.outcomes) == {200}, [o for o in client.outcomes if o != 200][:5]
    assert client.counts[0] == before and client.counts[-1] == before + 1  # served the old index, then the new one
    answer = httpx.post(f"{server.url}/api/v1/query", files=[("images", ("new.png", new.read_bytes()))], data={"k": "1"}).json()
    found = answer[0]["results"][0]
    assert found["path"] == str(new) and found["label"] == "newcomer" and found["similarity"] == pytest.approx(1.0, abs=1e-5)
    by_id = httpx.post(f"{server.url}/api/v1/query", data={"id": str(found["id"]), "k": "1"}).json()  # its stored vector, from the new segment
    assert by_id[0]["results"][0]["id"] == found["id"]
    assert httpx.get(f"{server.url}/readyz").json()["problem"] is None
    assert re.search(r"^siamcli_index_reloads_total [1-9]", httpx.get(f"{server.url}/metrics").text, re.M)
    shutil.rmtree(new.parent)  # put the gallery back as the other tests expect it
    assert invoke("index", gallery, "--model", run, "--prune").exit_code == 0
    wait_for(lambda: httpx.get(f"{server.url}/api/v1/index").json()["count"] == before)


def test_an_index_of_another_model_is_refused_and_the_old_one_keeps_serving(swap, tmp_path):
    server, run, gallery = swap
    other = other_model_run(run, gallery, tmp_path)
    served = run / "index"
    count = httpx.get(f"{server.url}/api/v1/index").json()["count"]
    aside = served.with_name("index.kept")
    shutil.copytree(other / "index", tmp_path / "incoming")
    os.replace(served, aside)  # directories swapped whole, as `siamcli index --force --model OTHER --out` does
    os.replace(tmp_path / "incoming", served)
    try:
        problem = wait_for(lambda: httpx.get(f"{server.url}/readyz").json()["problem"])
        assert "refused" in problem and "not the model" in problem and "still serving the previous one" in problem
        assert "refused" in server.log.read_text()  # the log says why, too
        info = httpx.get(f"{server.url}/api/v1/index").json()
        assert info["count"] == count and info["problem"] == problem
        answer = httpx.post(f"{server.url}/api/v1/query", files=[("images", ("q.png", (QUERIES / "s1_10.png").read_bytes()))], data={"k": "3"})
        assert answer.status_code == 200 and len(answer.json()[0]["results"]) == 3
    finally:
        shutil.rmtree(served)
        os.replace(aside, served)
    wait_for(lambda: httpx.get(f"{server.url}/readyz").json()["problem"] is None)  # its own index again


def other_model_run(run: Path, gallery: Path, base: Path) -> Path:
    """The same architecture with other weights (another model.keras), and its index over the same gallery."""
    from siamcli.index.build import IndexOptions, build_index
    from siamcli.models.embedding import load_embedding_model

    model = load_embedding_model(run / "model.keras")
    layer = model.get_layer("head").get_layer("projection")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel + np.random.default_rng(1).normal(0, 0.05, kernel.shape).astype(np.float32), bias])
    other = base / "other"
    other.mkdir()
    model.save(other / "model.keras")
    for name in ("config.json", "split.json"):
        shutil.copy(run / name, other / name)
    build_index(IndexOptions(gallery=str(gallery), model=str(other)))
    return other


def test_sigterm_answers_the_request_in_flight_then_exits_0(swap):
    server, _, _ = swap
    image = (QUERIES / "s3_10.png").read_bytes()
    boundary = "siamcli-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n3\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"s3_10.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image[:100]
    tail = image[100:] + f"\r\n--{boundary}--\r\n".encode()
    signalled = threading.Event()

    def body():  # half the body, then the rest only once the server is shutting down
        yield head
        assert signalled.wait(60)
        wait_for(lambda: refuses_connections(server.url))  # SIGTERM received: it stopped listening
        yield tail

    answers = []
    sender = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{server.url}/api/v1/query", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=60)))
    sender.start()
    wait_for(lambda: in_flight(server.url) == 2)  # the request is in flight (its headers are in), besides this scrape
    server.process.send_signal(signal.SIGTERM)
    signalled.set()
    sender.join(timeout=60)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()[0]["results"][0]["label"] == "s3"
    assert server.process.wait(timeout=60) == 0
    assert "stopped by SIGTERM" in server.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=5)
