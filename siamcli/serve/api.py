"""The /api/v1 routes. Answers to queries are exactly `siamcli query --json`, to verify exactly
`siamcli verify --json` for one pair (the same `to_json`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from siamcli.data.decode import DecodeError
from siamcli.index.items import IndexItem
from siamcli.pairs.verify import PairVerdict, cosine_similarities
from siamcli.serve import pair_body, query_body
from siamcli.serve.batcher import QueueFull
from siamcli.serve.config import MAX_ITEM_ID
from siamcli.serve.images import GalleryFileError, decode_upload, upload_name
from siamcli.serve.searcher import Query as SearchQuery
from siamcli.serve.searcher import ToEmbed
from siamcli.serve.service import Service
from siamcli.serve.state import Snapshot, label_counts

ItemId = Annotated[int, Path(ge=0, le=MAX_ITEM_ID, description="The item's id (stable across index updates).")]


class Error(BaseModel):
    detail: str


class FieldError(BaseModel):
    type: str
    loc: list[str | int] = Field(description='where: ["body", field, position…] or ["query", name]')
    msg: str


class Invalid(BaseModel):
    detail: list[FieldError]


class Neighbour(BaseModel):
    rank: int = Field(description="1 = most similar")
    id: int
    path: str
    label: str
    similarity: float = Field(description="cosine similarity, in [-1, 1]")
    match: bool | None = Field(None, description="similarity ≥ the calibrated threshold; absent when none is calibrated")


class Answer(BaseModel):
    query: str = Field(description="the upload's file name, or the gallery path of a queried item")
    results: list[Neighbour]


class Verdict(BaseModel):
    a: str = Field(description="image a: the upload's file name, or the gallery path of an item")
    b: str
    similarity: float = Field(description="cosine similarity of the two embeddings, in [-1, 1]")
    match: bool | None = Field(description="similarity ≥ threshold; null without a threshold (`reason` says why)")
    threshold: float | None = Field(description="a cosine similarity: the run's calibrated one, or the request's")
    threshold_source: Literal["calibration", "option"] | None = Field(description="calibration: the run's calibration.json; "
                                                                                    "option: the request's threshold")
    far: float | None = Field(None, description="with the calibrated threshold: the false-match rate measured there")
    far_ci95: list[float] | None = Field(None, min_length=2, max_length=2, description="its 95 % interval")
    frr: float | None = Field(None, description="with the calibrated threshold: the false-non-match rate measured there")
    frr_ci95: list[float] | None = Field(None, min_length=2, max_length=2, description="its 95 % interval")
    reason: str | None = Field(None, description="without a threshold: why there is none, and how to get one")


class Item(BaseModel):
    id: int
    path: str
    label: str
    hash: str = Field(description="sha256 of the file's bytes when it was indexed")


class ItemPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[Item]


class LabelCount(BaseModel):
    label: str
    count: int


class IndexInfo(BaseModel):
    count: int
    index_type: str
    factory: str
    embedding_dim: int
    image_size: int
    recall_at_10: float | None
    model_fingerprint: str
    threshold: float | None = Field(description="calibrated squared-L2 distance; null when not calibrated")
    similarity_threshold: float | None = Field(description="a neighbour matches when its similarity is at least this")
    labels: list[LabelCount]
    updated: str | None
    problem: str | None = Field(description="why a changed index directory was refused (the previous index keeps serving)")


def errors(*codes: int) -> dict:
    return {code: {"model": Error} for code in codes}


router = APIRouter(prefix="/api/v1")


async def current(request: Request) -> Service:
    """The Service of the app handling the request (async: no thread hop)."""
    return request.app.state.service


Current = Annotated[Service, Depends(current)]


@router.post("/query", response_model=list[Answer], responses={**errors(400, 404, 413, 415, 503), 422: {"model": Invalid}},
             openapi_extra={"requestBody": query_body.openapi_request_body()})
async def query(request: Request, service: Current) -> Response:
    """The k most similar gallery images to each uploaded image, then to each gallery item given by id.

    A form (multipart with images and/or ids, or urlencoded with ids), or a JSON body with ids.
    `exclude_self` leaves a queried item out of its own results: k others are returned."""
    async with query_body.read_query(request) as asked:
        uploads, ids = asked.uploads, asked.ids
        snapshot = service.state.snapshot
        stored = _stored_vectors(snapshot, ids)
        leave_out = [None] * len(uploads) + (list(ids) if asked.exclude_self else [None] * len(ids))
        try:
            with service.batcher.admit(len(uploads) + len(ids)) as ticket:
                decoded = await _decode_all(service, uploads)
                names = [upload_name(f.filename, i) for i, f in enumerate(uploads)] + [snapshot.item(i).path for i in ids]
                results = await ticket.submit(len(uploads), SearchQuery(names, decoded, stored, asked.k, leave_out))
        except QueueFull as full:
            raise _at_capacity(service, full) from None
    return JSONResponse([result.to_json() for result in results])


@router.post("/verify", response_model=Verdict, responses={**errors(400, 404, 413, 415, 503), 422: {"model": Invalid}},
             openapi_extra={"requestBody": pair_body.openapi_request_body()})
async def verify(request: Request, service: Current) -> Response:
    """Whether two images show the same identity: their cosine similarity and match / no match.

    Each image is an upload (embedded with the queries of the same moment) or a gallery item by id
    (its stored vector). The decision uses the run's calibrated threshold, with the false-match and
    false-non-match rates measured there, or the request's `threshold`; with neither, `match` is
    null and `reason` says why. The answer is what `siamcli verify A B --json` prints."""
    async with pair_body.read_pair(request) as pair:
        snapshot = service.state.snapshot
        decision = service.state.decision(pair.threshold)
        sides = (pair.a, pair.b)
        ids = [side for side in sides if isinstance(side, int)]
        stored = iter(_stored_vectors(snapshot, ids) if ids else ())
        uploaded = iter(await _embedded(service, pair.uploads))
        vectors = [next(stored) if isinstance(side, int) else next(uploaded) for side in sides]
        names = [snapshot.item(side).path if isinstance(side, int) else upload_name(side.filename, position)
                 for position, side in enumerate(sides)]
    similarity = float(cosine_similarities(vectors[0][None], vectors[1][None])[0])
    answer = PairVerdict(names[0], names[1], similarity, decision).to_json()
    if "reason" in answer:  # the engine names the CLI's option; a request sets the field
        answer["reason"] = answer["reason"].replace("--threshold T", "a threshold field")
    return JSONResponse(answer)


@router.get("/items", response_model=ItemPage)
async def items(
    service: Current,
    label: Annotated[str | None, Query(max_length=1000, description="Only items with this label.")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ITEM_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ItemPage:
    """Gallery items in index order, optionally of one label (browse by label)."""
    snapshot = service.state.snapshot
    rows = snapshot.by_label.get(label, []) if label is not None else range(snapshot.count)
    page = [_item(snapshot.item_at(position)) for position in rows[offset:offset + limit]]
    return ItemPage(total=len(rows), offset=offset, limit=limit, items=page)


@router.get("/items/{item_id}", response_model=Item, responses=errors(404))
async def item(service: Current, item_id: ItemId) -> Item:
    """One indexed item: its path, label and content hash."""
    return _item(_known(service.state.snapshot, item_id))


@router.get("/items/{item_id}/image", responses={**errors(404, 409), 200: {"content": {"image/jpeg": {}}}})
async def image(request: Request, service: Current, item_id: ItemId,
                size: Annotated[int, Query(ge=16, le=1024, description="Longest side in pixels.")] = 256) -> Response:
    """The item's image as a JPEG thumbnail at most `size` pixels on a side (never enlarged)."""
    found = _known(service.state.snapshot, item_id)
    etag = f'"{found.sha256[:24] or found.id}-{size}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        data = await service.blocking(service.thumbnails.get, found, size)
    except GalleryFileError as exc:
        raise HTTPException(exc.status, exc.detail) from None
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/index", response_model=IndexInfo)
async def index(service: Current) -> IndexInfo:
    """What is being searched: size, index type, measured recall, model, threshold, labels."""
    return index_info(service.state.snapshot, service.state.problem)


def index_info(snapshot: Snapshot, problem: str | None) -> IndexInfo:
    manifest = snapshot.loaded.manifest
    recall = manifest.get("recall_at_10")
    return IndexInfo(
        count=snapshot.count, index_type=str(manifest.get("index_type")), factory=str(manifest.get("factory")),
        embedding_dim=snapshot.loaded.dim, image_size=int(manifest["image_size"]),
        recall_at_10=float(recall) if isinstance(recall, (int, float)) else None,
        model_fingerprint=str(manifest["model_fingerprint"]), threshold=snapshot.threshold,
        similarity_threshold=snapshot.similarity_threshold,
        labels=[LabelCount(label=label, count=count) for label, count in label_counts(snapshot)],
        updated=manifest.get("updated") or manifest.get("created"), problem=problem,
    )


def _item(item: IndexItem) -> Item:
    return Item(id=item.id, path=item.path, label=item.label, hash=item.sha256)


def _known(snapshot: Snapshot, item_id: int) -> IndexItem:
    found = snapshot.item(item_id)
    if found is None:
        raise HTTPException(404, f"no item {item_id} in the index")
    return found


def _stored_vectors(snapshot: Snapshot, ids: list[int]):
    if not ids:
        return None
    missing = [i for i in ids if snapshot.item(i) is None]
    if missing:
        raise HTTPException(404, f"no item {missing[0]} in the index")
    return np.concatenate([snapshot.vector(i) for i in ids])


async def _embedded(service: Service, uploads: list[UploadFile]) -> np.ndarray:
    """(uploads, dim) embeddings of the uploads, through the batcher (one forward pass with whatever
    else is waiting); 503 when the queue is full."""
    if not uploads:
        return np.zeros((0, service.state.dim), np.float32)
    try:
        with service.batcher.admit(len(uploads)) as ticket:
            decoded = await _decode_all(service, uploads)
            return await ticket.submit(len(decoded), ToEmbed(decoded))
    except QueueFull as full:
        raise _at_capacity(service, full) from None


def _at_capacity(service: Service, full: QueueFull) -> HTTPException:
    service.metrics.reject("overload")
    return HTTPException(503, str(full), headers={"Retry-After": str(full.retry_after)})


async def _decode_all(service: Service, uploads: list[UploadFile]) -> list[np.ndarray]:
    """The uploads decoded on the pool (resized later, with their batch); 400 for one that does not decode."""
    size = service.state.image_size
    data = [await upload.read() for upload in uploads]
    names = [upload_name(upload.filename, position) for position, upload in enumerate(uploads)]
    try:
        return list(await asyncio.gather(*(service.blocking(decode_upload, d, n, size) for d, n in zip(data, names))))
    except DecodeError as exc:
        raise HTTPException(400, f"{exc.path}: {exc.reason}") from None
