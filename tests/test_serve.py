"""`siamcli serve`: a real server process (shared for the session) and the app in-process.

Answers equal `siamcli query --json` and `siamcli verify --json`; item and image routes; hostile uploads are 4xx and the
server keeps answering; limits (413, 422, 503 then recovery); path traversal; token; CORS;
the page's headers; metrics; schemathesis against the served OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import schemathesis.cli
from click.testing import CliRunner
from conftest import REPO, write_test_calibration
from PIL import Image
from serve_support import QUERIES, shared_run, wait_for
from test_hostile_inputs import _png_declaring
from test_index_cli import invoke

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
QUERY_FILES = [QUERIES / name for name in ("s7_10.png", "s3_10.png", "s11_10.png")]




@pytest.fixture
def client(served):
    server, _ = served
    with server.client() as c:
        yield c


def upload(*paths: Path, k: int = 5, **extra) -> dict:
    return {"files": [("images", (p.name, p.read_bytes(), "image/png")) for p in paths], "data": {"k": str(k), **extra}}


def same_results(served: list, expected: list) -> None:
    """Equal JSON, similarities to 1e-5 (batches of another size round differently in the last digit)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        assert [{**r, "similarity": None} for r in got["results"]] == [{**r, "similarity": None} for r in want["results"]]
        assert np.allclose([r["similarity"] for r in got["results"]], [r["similarity"] for r in want["results"]], atol=1e-5)


# ---------------------------------------------------------------- answers


def test_answers_equal_siamcli_query_json(served, client):
    _, run = served
    cli = invoke("query", *QUERY_FILES, "--index", run / "index", "--k", "7", "--json")
    assert cli.exit_code == 0, cli.stderr
    expected = json.loads(cli.stdout)
    together = client.post("/api/v1/query", **upload(*QUERY_FILES, k=7))
    assert together.status_code == 200, together.text
    assert [a["query"] for a in together.json()] == [p.name for p in QUERY_FILES]
    same_results(together.json(), expected)
    for path, want in zip(QUERY_FILES, expected):  # one by one: other batch compositions, same answers
        alone = client.post("/api/v1/query", **upload(path, k=7))
        same_results(alone.json(), [want])
    assert together.json()[0]["results"][0]["label"] == "s7"  # a held-out photo finds its person


def test_query_by_item_id_uses_the_stored_vector(served, client):
    _, run = served
    item = client.get("/api/v1/items", params={"label": "s5", "limit": 1}).json()["items"][0]
    answer = client.post("/api/v1/query", data={"id": str(item["id"]), "k": "4"})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    assert result["query"] == item["path"]
    assert result["results"][0]["id"] == item["id"] and result["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    cli = json.loads(invoke("query", item["path"], "--index", run / "index", "--k", "4", "--json").stdout)
    same_results(answer.json(), cli)
    assert client.post("/api/v1/query", data={"id": "999999", "k": "4"}).status_code == 404


def test_exclude_self_leaves_the_queried_item_out_and_returns_k_others(client):
    item = client.get("/api/v1/items", params={"label": "s9", "limit": 1}).json()["items"][0]["id"]
    [with_itself] = client.post("/api/v1/query", data={"id": str(item), "k": "5"}).json()
    assert with_itself["results"][0]["id"] == item  # an item is its own nearest: it takes one of the k
    answer = client.post("/api/v1/query", data={"id": str(item), "k": "4", "exclude_self": "true"})
    assert answer.status_code == 200, answer.text
    [without] = answer.json()
    assert without["query"] == with_itself["query"]
    assert without["results"] == [{**row, "rank": row["rank"] - 1} for row in with_itself["results"][1:]]  # the next 4, ranked from 1
    everything = client.post("/api/v1/query", json={"id": item, "k": 1000, "exclude_self": True}).json()[0]["results"]
    assert len(everything) == 107 and item not in {row["id"] for row in everything}  # every other gallery image
    upload_alone = client.post("/api/v1/query", **upload(QUERY_FILES[0], k=3))
    assert client.post("/api/v1/query", **upload(QUERY_FILES[0], k=3, exclude_self="true")).json() == upload_alone.json()  # no id, nothing left out
    for wrong in ("yes", "1", "True", ""):
        assert client.post("/api/v1/query", data={"id": str(item), "exclude_self": wrong}).status_code == 422, wrong


def test_a_json_body_searches_by_id_as_a_form_does(client):
    ids = [row["id"] for row in client.get("/api/v1/items", params={"label": "s4", "limit": 2}).json()["items"]]
    as_json = client.post("/api/v1/query", json={"id": ids, "k": 3})
    assert as_json.status_code == 200, as_json.text
    as_form = client.post("/api/v1/query", data={"id": [str(i) for i in ids], "k": "3"})
    assert as_json.json() == as_form.json() and len(as_json.json()) == 2
    one = client.post("/api/v1/query", json={"id": ids[0], "k": 3.0})  # one id needs no list; 3.0 is an integer in JSON
    assert one.json() == as_json.json()[:1]
    refused = {
        '{"k": 3}': "id", '{"id": []}': "id", '{"id": ["89"]}': "id", '{"id": [true]}': "id", '{"id": 1.5}': "id",
        '{"id": 1, "k": "3"}': "k", '{"id": 1, "exclude_self": "true"}': "exclude_self", '{"id": 1, "images": ["x"]}': "images",
        '[89]': "", "{": "",
    }
    for body, field in refused.items():
        answer = client.post("/api/v1/query", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, (body, answer.text)
        assert any(error["loc"][:2] == ["body", field][: 2 if field else 1] for error in answer.json()["detail"]), (body, answer.text)
    unknown = client.post("/api/v1/query", json={"id": 1, "exclude-self": True}).json()["detail"][0]
    assert unknown["loc"] == ["body", "exclude-self"] and unknown["msg"].startswith("unknown field; the fields are images")
    other = client.post("/api/v1/query", content=b"id=89", headers={"Content-Type": "text/plain"})
    assert other.status_code == 415 and "multipart/form-data" in other.json()["detail"] and "application/json" in other.json()["detail"]


def test_k_larger_than_the_gallery_returns_all_of_it_and_k_outside_1_to_1000_is_422(client):
    everything = client.post("/api/v1/query", **upload(QUERY_FILES[0], k=1000))
    assert everything.status_code == 200 and len(everything.json()[0]["results"]) == 108
    for k in ("0", "1001", "-3", "abc", "2.5"):
        answer = client.post("/api/v1/query", files=upload(QUERY_FILES[0])["files"], data={"k": k})
        assert answer.status_code == 422, (k, answer.text)
    assert client.post("/api/v1/query", data={"k": "5"}).status_code == 422  # no image, no id


# ---------------------------------------------------------------- verify

VERIFY = "/api/v1/verify"


def pair(a: Path, b: Path, **fields) -> dict:
    """A multipart verify body: files a and b, and text fields."""
    return {"files": [("a", (a.name, a.read_bytes(), "image/png")), ("b", (b.name, b.read_bytes(), "image/png"))], "data": fields}


def test_verify_answers_equal_siamcli_verify_json(served, client):
    _, run = served
    a, b = QUERY_FILES[:2]  # s7 and s3: two people
    cli = invoke("verify", a, b, "--model", run, "--json")
    assert cli.exit_code == 0, cli.stderr
    expected = json.loads(cli.stdout)
    answer = client.post(VERIFY, **pair(a, b))
    assert answer.status_code == 200, answer.text
    served_pair = answer.json()
    assert served_pair["similarity"] == pytest.approx(expected["similarity"], abs=1e-5) and served_pair["similarity"] < 0.999
    assert (served_pair["a"], served_pair["b"]) == (a.name, b.name)
    assert {key: value for key, value in served_pair.items() if key not in ("a", "b", "similarity", "reason")} == \
        {key: value for key, value in expected.items() if key not in ("a", "b", "similarity", "reason")}
    # No calibration: no decision, and the reason says how to get one as a request sets it (a field, not --threshold).
    assert served_pair["match"] is None and served_pair["threshold"] is None and served_pair["threshold_source"] is None
    assert served_pair["reason"] == expected["reason"].replace("--threshold T", "a threshold field") != expected["reason"]


def test_verify_decides_by_the_run_s_calibration_as_it_is_now(served, client):
    """The same image twice is similarity 1 and a match at the calibrated threshold; a calibration written
    while serving applies without a restart; an unreliable one gives no decision, with why."""
    _, run = served
    same, other = pair(QUERY_FILES[0], QUERY_FILES[0]), pair(QUERY_FILES[0], QUERY_FILES[1])
    different = client.post(VERIFY, **other).json()["similarity"]
    assert client.post(VERIFY, **same).json()["similarity"] == pytest.approx(1.0, abs=1e-6)
    between = (different + 1) / 2  # a threshold the same photo passes and the other person does not
    try:
        write_test_calibration(run, threshold=2 - 2 * between)  # as `siamcli evaluate` writes it: a squared distance
        wait_for(lambda: client.get("/api/v1/index").json()["similarity_threshold"] is not None)
        matched, refused = client.post(VERIFY, **same).json(), client.post(VERIFY, **other).json()
        assert matched["match"] is True and refused["match"] is False
        for answer in (matched, refused):
            assert answer["threshold"] == pytest.approx(between) and answer["threshold_source"] == "calibration"
            assert (answer["far"], answer["far_ci95"], answer["frr"], answer["frr_ci95"]) == (0.01, [0.0, 0.02], 0.01, [0.0, 0.02])
            assert "reason" not in answer
        write_test_calibration(run, threshold=2 - 2 * between, reliable=False)
        unreliable = wait_for(lambda: (answer := client.post(VERIFY, **same).json())["threshold"] is None and answer)
        assert unreliable["match"] is None and "not reliable (measured on 2 identities" in unreliable["reason"]
        assert "--threshold" not in unreliable["reason"] and "a threshold field" in unreliable["reason"]
    finally:
        (run / "calibration.json").unlink(missing_ok=True)
        wait_for(lambda: "not calibrated" in client.post(VERIFY, **same).json().get("reason", ""))


def test_verify_takes_a_threshold_instead_of_the_calibration(client):
    for body in (pair(QUERY_FILES[0], QUERY_FILES[1], threshold="-1"), pair(QUERY_FILES[0], QUERY_FILES[1], threshold="-1.0e0")):
        answer = client.post(VERIFY, **body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["match"] is True and answer.json()["threshold"] == -1.0 and answer.json()["threshold_source"] == "option"
        assert not {"far", "frr", "reason"} & set(answer.json())  # no rates: none were measured at a threshold one sets
    assert client.post(VERIFY, **pair(QUERY_FILES[0], QUERY_FILES[1], threshold="1")).json()["match"] is False
    for wrong in ("1.5", "-2", "abc", "", "true", "0x1"):
        refused = client.post(VERIFY, **pair(QUERY_FILES[0], QUERY_FILES[1], threshold=wrong))
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "threshold"], (wrong, refused.text)


def test_verify_takes_gallery_items_by_id_alone_or_beside_an_upload(served, client):
    _, run = served
    first, second = client.get("/api/v1/items", params={"label": "s5", "limit": 2}).json()["items"]
    by_ids = client.post(VERIFY, json={"a_id": first["id"], "b_id": second["id"]})
    assert by_ids.status_code == 200, by_ids.text
    cli = json.loads(invoke("verify", first["path"], second["path"], "--model", run, "--json").stdout)
    assert by_ids.json()["similarity"] == pytest.approx(cli["similarity"], abs=1e-5)
    assert (by_ids.json()["a"], by_ids.json()["b"]) == (first["path"], second["path"])
    as_form = client.post(VERIFY, data={"a_id": str(first["id"]), "b_id": str(second["id"])})
    assert as_form.json() == by_ids.json()
    itself = client.post(VERIFY, json={"a_id": first["id"], "b_id": first["id"], "threshold": 0.5}).json()
    assert itself["similarity"] == pytest.approx(1.0, abs=1e-6) and itself["match"] is True
    photo = Path(first["path"])  # the item's own file, uploaded: the model's vector is the stored one
    mixed = client.post(VERIFY, files=[("a", (photo.name, photo.read_bytes(), "image/png"))], data={"b_id": str(first["id"])})
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["similarity"] == pytest.approx(1.0, abs=1e-5) and (mixed.json()["a"], mixed.json()["b"]) == (photo.name, first["path"])
    unknown = client.post(VERIFY, json={"a_id": first["id"], "b_id": 999999})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no item 999999 in the index"


def test_verify_refuses_a_missing_image_with_422_and_a_non_image_with_400(client):
    a = ("a", (QUERY_FILES[0].name, QUERY_FILES[0].read_bytes(), "image/png"))
    missing = client.post(VERIFY, files=[a])
    assert missing.status_code == 422
    [error] = missing.json()["detail"]
    assert error["loc"] == ["body", "b"] and error["msg"] == "missing: give image b as a file part b (multipart/form-data) or a gallery item id b_id"
    assert client.post(VERIFY, json={"a_id": 1}).json()["detail"][0]["loc"] == ["body", "b"]
    refused = {
        "twice": ({"files": [a], "data": {"a_id": "1", "b_id": "2"}}, ["body", "a"], "give image a once"),
        "two files": ({"files": [a, a, ("b", a[1])]}, ["body", "a"], "one image per field, got 2"),
        "text a": ({"files": [("b", a[1])], "data": {"a": "photo.png"}}, ["body", "a"], "must be a file"),
        "unknown": ({"files": [a, ("b", a[1])], "data": {"c": "1"}}, ["body", "c"], "unknown field; the fields are a and b"),
        "null": ({"json": {"a_id": 1, "b_id": 2, "threshold": None}}, ["body", "threshold"], ""),
        "negative id": ({"json": {"a_id": -1, "b_id": 2}}, ["body", "a_id"], ""),
        "files in JSON": ({"json": {"a": "x", "a_id": 1, "b_id": 2}}, ["body", "a"], "unknown field"),
    }
    for case, (body, loc, msg) in refused.items():
        answer = client.post(VERIFY, **body)
        assert answer.status_code == 422, (case, answer.text)
        assert answer.json()["detail"][0]["loc"] == loc and answer.json()["detail"][0]["msg"].startswith(msg), (case, answer.text)
    not_image = client.post(VERIFY, files=[a, ("b", ("list.png", HOSTILE["text.jpg"], "image/png"))])
    assert not_image.status_code == 400
    assert not_image.json()["detail"] == "list.png: not a readable image (no JPEG, PNG, BMP, GIF, WebP, TIFF or PNM data)"
    other = client.post(VERIFY, content=b"a_id=1", headers={"Content-Type": "text/plain"})
    assert other.status_code == 415 and "a_id and b_id" in other.json()["detail"]


def test_a_verify_s_uploads_join_the_forward_pass_of_the_queries_beside_them(serving_state):
    from siamcli.index.search import QueryResult
    from siamcli.serve.batcher import MicroBatcher
    from siamcli.serve.images import decode_upload
    from siamcli.serve.searcher import Query, Searcher, ToEmbed

    decoded = [decode_upload(p.read_bytes(), p.name, serving_state.image_size) for p in QUERY_FILES]

    async def requests(*payloads) -> tuple[list, list[int]]:
        """The payloads sent at once through the service's batcher: (their answers, images per batch)."""
        batches: list[int] = []
        batcher = MicroBatcher(Searcher(serving_state, 32), max_batch=32, max_wait=5, capacity=64, on_batch=batches.append)
        batcher.start()
        try:
            with contextlib.ExitStack() as admitted:
                tickets = [admitted.enter_context(batcher.admit(payload.uploads)) for payload in payloads]
                answers = await asyncio.gather(*(ticket.submit(p.uploads, p) for ticket, p in zip(tickets, payloads)))
        finally:
            await batcher.close()
        return answers, batches

    (query, together), batches = asyncio.run(requests(Query(["q"], decoded[:1], None, 3), ToEmbed(decoded[1:])))
    assert batches == [3]  # one forward pass for the query's upload and the verify's two
    assert isinstance(query[0], QueryResult) and len(query[0].neighbours) == 3
    [alone], _ = asyncio.run(requests(ToEmbed(decoded[1:])))
    assert together.shape == (2, serving_state.dim) and np.allclose(together, alone, atol=1e-5)


def test_a_large_upload_resized_when_decoded_gives_the_pixels_of_its_batch_s_resize():
    from siamcli.models.embed import resize_batch
    from siamcli.serve.images import SHRINK_ABOVE, decode_upload

    big = np.random.default_rng(5).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    assert big.shape[0] * big.shape[1] > SHRINK_ABOVE * 32 * 32
    early = decode_upload(_bytes(Image.fromarray(big), "PNG"), "big.png", 32)
    assert early.shape == (32, 32, 3) and early.dtype == np.float32
    small = big[:20, :30]
    assert np.array_equal(resize_batch([early, small], 32), resize_batch([big, small], 32))  # resized again: no pixel changes


# ---------------------------------------------------------------- items, images, index


def test_item_and_image_routes(client):
    page = client.get("/api/v1/items", params={"label": "s7"}).json()
    assert page["total"] == 9 and {i["label"] for i in page["items"]} == {"s7"}
    item = client.get(f"/api/v1/items/{page['items'][0]['id']}").json()
    assert item == page["items"][0]
    assert item["hash"] == hashlib.sha256(Path(item["path"]).read_bytes()).hexdigest()
    image = client.get(f"/api/v1/items/{item['id']}/image", params={"size": 48})
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(image.content)) as thumb:
        assert max(thumb.size) == 48  # 92 × 112 shrunk to fit 48
    again = client.get(f"/api/v1/items/{item['id']}/image", params={"size": 48}, headers={"If-None-Match": image.headers["etag"]})
    assert again.status_code == 304
    for size in ("8", "5000", "big"):
        assert client.get(f"/api/v1/items/{item['id']}/image", params={"size": size}).status_code == 422
    assert client.get("/api/v1/items/123456/image").status_code == 404
    assert client.get("/api/v1/items", params={"label": "nobody"}).json()["total"] == 0


def test_index_health_and_readiness(client):
    info = client.get("/api/v1/index").json()
    assert info["count"] == 108 and info["index_type"] == "flat" and info["recall_at_10"] == 1.0
    assert info["threshold"] is None and info["problem"] is None and len(info["model_fingerprint"]) == 64
    assert {label["label"]: label["count"] for label in info["labels"]} == {f"s{i}": 9 for i in range(1, 13)}
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["items"] == 108 and ready["problem"] is None


# ---------------------------------------------------------------- hostile input


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


RGB = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8))
PNG, JPEG = _bytes(RGB, "PNG"), _bytes(RGB, "JPEG")
HOSTILE = {
    "truncated.png": PNG[: len(PNG) // 2],
    "cut-header.png": PNG[:20],
    "truncated.jpg": JPEG[: len(JPEG) // 2],
    "empty.jpg": b"",
    "text.jpg": b"this is a shopping list, not a photo\n" * 20,
    "random.png": np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "bomb.png": _png_declaring(100_000, 100_000),
    "no-pixels.png": b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4000, 4000, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b""),
    "eps.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "icon.png": _bytes(RGB, "ICO"),
    "targa.png": _bytes(RGB, "TGA"),
    "../../../etc/passwd": b"root:x:0:0:root:/root:/bin/bash\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_uploads_get_a_4xx_json_error_and_the_server_keeps_answering(client, name):
    answer = client.post("/api/v1/query", files=[("images", (name, HOSTILE[name], "image/png"))], data={"k": "3"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail
    assert "/" not in detail.split(":")[0]  # the upload's name is reduced to a base name
    assert client.post("/api/v1/query", **upload(QUERY_FILES[0], k=1)).status_code == 200


def test_odd_but_valid_uploads_are_answered(client):
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    valid = {
        "grey16.png": _bytes(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), "PNG"),
        "alpha.png": _bytes(RGB.convert("RGBA"), "PNG"),
        "one.gif": _bytes(Image.new("P", (1, 1)), "GIF"),
        "animated.gif": _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "photo.webp": _bytes(RGB, "WEBP"),
        "../../odd name.png": PNG,
    }
    files = [("images", (name, data, "application/octet-stream")) for name, data in valid.items()]
    answer = client.post("/api/v1/query", files=files, data={"k": "2"})
    assert answer.status_code == 200, answer.text
    assert [a["query"] for a in answer.json()] == [*list(valid)[:-1], "odd name.png"]
    nameless = client.post("/api/v1/query", files=[("images", ("", PNG, "image/png"))], data={"k": "2"})
    assert nameless.status_code == 422 and len(nameless.content) < 500  # not a file part; its bytes are not echoed


def test_a_body_over_the_limit_is_413(client):
    big = np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8)  # ≈ 1.4 MB as PNG; the limit is 1 MiB
    data = _bytes(Image.fromarray(big), "PNG")
    assert len(data) > 1 << 20
    answer = client.post("/api/v1/query", files=[("images", ("big.png", data, "image/png"))], data={"k": "3"})
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]

    body = b'--b\r\nContent-Disposition: form-data; name="images"; filename="big.png"\r\n\r\n' + data + b"\r\n--b--\r\n"

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for start in range(0, len(body), 1 << 16):
            yield body[start:start + (1 << 16)]

    streamed = client.post("/api/v1/query", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
    assert client.post("/api/v1/query", **upload(QUERY_FILES[0], k=1)).status_code == 200


def test_more_than_64_images_or_ids_in_one_request_is_422_as_the_schema_says(client):
    answer = client.post("/api/v1/query", files=[("images", ("a.png", PNG[:10], "image/png"))] * 65, data={"k": "1"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["msg"] == "at most 64 images per request, got 65"
    assert client.post("/api/v1/query", json={"id": [0] * 65}).status_code == 422
    assert client.post("/api/v1/query", json={"id": [0] * 64, "k": 1}).status_code == 200


TRAVERSALS = [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/..\\..\\siamcli\\serve\\app.py", "/static/app.py", "/static/", "/static/.%2e/app.py",
    "/api/v1/items/..%2F..%2Fetc%2Fpasswd", "/api/v1/items/../../etc/passwd", "/api/v1/items/%2e%2e/image",
    "/api/v1/items/1/image/../../../../etc/passwd", "/api/v1/items/-1", "/api/v1/items/1e3", "/api/v1/items/0x10/image",
    "/api/v1/items/1%00/image", "/api/v1/items/%2Fetc%2Fpasswd/image", "/api/v1/items/1/image?size=../../etc/passwd",
    "/api/v1/items?label=../../etc&offset=-1", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/v1/../../../etc/passwd",
    "/api/v1/index/../../../../etc/shadow", "/index.html", "/api/v1/items/99999999999999999999999",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_attempts_get_404_or_422(served, target):
    server, _ = served
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", target)  # sent as written: no client-side normalisation
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status in (404, 422), (target, response.status, body[:200])
    assert b"root:" not in body and b"import" not in body
    assert json.loads(body)["detail"]


# ---------------------------------------------------------------- load


def test_overload_gives_503_with_retry_after_then_recovers(served, client):
    server, _ = served  # started with --max-queue 4 --max-batch 4
    files = upload(*QUERY_FILES, k=3)

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as many:
            return await asyncio.gather(*(many.post("/api/v1/query", **files) for _ in range(40)))

    answers = asyncio.run(storm())
    statuses = sorted({a.status_code for a in answers})
    assert statuses == [200, 503], statuses
    for refused in (a for a in answers if a.status_code == 503):
        assert refused.headers["retry-after"] == "1" and "capacity" in refused.json()["detail"]
    assert client.post("/api/v1/query", **upload(QUERY_FILES[0], k=3)).status_code == 200  # recovered
    metrics = client.get("/metrics").text
    assert re.search(r'siamcli_requests_total\{route="/api/v1/query",method="POST",status="503"\} [1-9]', metrics)
    assert 'siamcli_rejected_total{reason="overload"}' in metrics
    assert re.search(r"^siamcli_queue_images 0$", metrics, re.M)


def test_metrics_are_prometheus_text(client):
    client.get("/api/v1/index")
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$|^# (HELP|TYPE) ')
    bad = [line for line in text.text.splitlines() if not sample.match(line)]
    assert not bad, bad
    for name in ("siamcli_request_seconds_bucket", "siamcli_batch_images_bucket", "siamcli_index_items 108", "siamcli_queue_jobs"):
        assert name in text.text
    assert 'route="/api/v1/items/{item_id}"' in text.text or 'route="/api/v1/index"' in text.text


# ---------------------------------------------------------------- schemathesis


SCHEMATHESIS_CONFIG = """
cache.enabled = false  # each run stands alone: no replay of an earlier run's failures

[[operations]]
include-path = "/api/v1/query"
include-method = "POST"
# No schema can say "bytes that decode as an image": generated files are noise, answered 400 with
# the decoder's reason (a documented answer). Every other status is held to what the schema says.
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path = "/api/v1/verify"
include-method = "POST"
# The same: generated files are noise (400), generated ids mostly name no item (404).
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""


def test_the_served_schema_says_what_the_server_accepts_by_every_schemathesis_check(served, tmp_path, monkeypatch):
    """`st run` as a user would run it, with every check and every phase: examples, coverage (each
    field's boundaries and wrong types, missing and unknown fields, an empty body), fuzzing,
    stateful. What the schema allows must be answered, what it forbids refused, and every answer
    must be one the schema describes."""
    server, _ = served
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    monkeypatch.chdir(tmp_path)  # whatever it writes stays out of the repository
    run = CliRunner().invoke(schemathesis.cli.schemathesis, [
        "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color", "run", f"{server.url}/openapi.json", "--checks", "all",
        "--workers", "1", "--max-examples", "25", "--seed", "1", "--suppress-health-check", "too_slow"])
    assert run.exit_code == 0, run.output[run.output.find("FAILURES"):][:8000]
    tested = re.search(r"(\d+) generated, (\d+) passed", run.output)
    assert "9 selected / 9 total" in run.output and tested and int(tested[1]) == int(tested[2]) > 300, run.output[-3000:]


# ---------------------------------------------------------------- in-process: token, CORS, page


@pytest.fixture(scope="session")
def serving_state(tmp_path_factory, tiny_run):
    from siamcli.serve.state import open_state

    return open_state(str(shared_run(tmp_path_factory, tiny_run) / "index"), None)


def in_process(state, **options):
    from fastapi.testclient import TestClient

    from siamcli.serve.app import create_app
    from siamcli.serve.config import ServeOptions, validate
    from siamcli.serve.service import make_service

    return TestClient(create_app(make_service(validate(ServeOptions(watch_interval=0, **options)), state)))


def test_token_is_required_on_the_api_and_compared_in_constant_time(serving_state):
    from siamcli.serve.security import token_matches

    token = "correct horse battery staple"
    with in_process(serving_state, token=token) as app:
        for path in ("/api/v1/index", "/api/v1/items/0", "/api/v1/items/0/image", "/metrics"):
            missing = app.get(path)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
            assert app.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert app.get(path, headers={"Authorization": f"Basic {token}"}).status_code == 401
            assert app.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path
        assert app.post("/api/v1/query", **upload(QUERY_FILES[0])).status_code == 401
        for path in ("/", "/static/app.js", "/healthz", "/readyz", "/openapi.json"):
            assert app.get(path).status_code == 200, path
        assert "HTTPBearer" in json.dumps(app.get("/openapi.json").json()["components"])
    assert token_matches(token, token) and not token_matches(token, token + "x") and not token_matches("", token)


def test_cors_is_off_unless_an_origin_is_given(serving_state):
    preflight = {"Origin": "https://tools.example", "Access-Control-Request-Method": "POST"}
    with in_process(serving_state) as app:
        assert "access-control-allow-origin" not in app.options("/api/v1/query", headers=preflight).headers
        assert "access-control-allow-origin" not in app.get("/api/v1/index", headers={"Origin": "https://tools.example"}).headers
    with in_process(serving_state, cors_origins=("https://tools.example",)) as app:
        assert app.options("/api/v1/query", headers=preflight).headers["access-control-allow-origin"] == "https://tools.example"
        other = app.get("/api/v1/index", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_page_and_its_files_are_served_with_a_strict_policy(serving_state):
    with in_process(serving_state) as app:
        page = app.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/static/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
            static = app.get(f"/static/{name}")
            assert static.status_code == 200 and static.headers["content-type"].startswith(kind)
            assert "//cdn" not in static.text and "https://" not in static.text
        assert app.get("/static/index.html").status_code == 404


def test_upload_names_are_reduced_to_printable_base_names():
    from siamcli.serve.images import upload_name

    assert upload_name("../../etc/passwd", 0) == "passwd"
    assert upload_name("C:\\photos\\me.jpg", 0) == "me.jpg"
    assert upload_name("bell\x07\x1b[31m.png", 0) == "bell[31m.png"
    assert upload_name("", 2) == upload_name(None, 2) == "upload-3"
    assert len(upload_name("a" * 5000, 0)) == 200


# ---------------------------------------------------------------- the command line


def test_options_are_checked_before_tensorflow_is_imported():
    script = (
        "import sys\nfrom siamcli.cli.app import main\nsys.argv = ['siamcli', 'serve', '--port', '70000']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.stdout.split() == ["2", "False"], result
    assert result.stderr.strip() == "error: --port must be 0..65535 (0: any free port), got 70000"


def test_other_hosts_without_a_token_are_warned_about_and_a_missing_index_is_one_line(tmp_path):
    result = invoke("serve", "--host", "0.0.0.0", "--index", tmp_path / "nowhere")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("warning: --host 0.0.0.0 makes the service reachable") and "--token" in lines[0]
    assert lines[1].startswith("error: no index at") and len(lines) == 2
    quiet = invoke("serve", "--host", "0.0.0.0", "--token", "a-long-enough-token", "--index", tmp_path / "nowhere")
    assert "warning" not in quiet.stderr and quiet.exit_code == 2


def test_a_port_in_use_is_a_one_line_error(served):
    server, run = served
    port = urlsplit(server.url).port
    result = invoke("serve", "--index", run / "index", "--port", str(port))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
