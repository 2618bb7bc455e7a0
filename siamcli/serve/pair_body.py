"""What `POST /api/v1/verify` accepts, read and validated once for its three body types, and the
OpenAPI request body that says exactly that.

Two images, `a` and `b`, each either an upload or a gallery item (its stored vector), and an
optional `threshold` (a cosine similarity from −1 to 1) instead of the run's calibrated one:

- multipart/form-data: `a` or `a_id`, and `b` or `b_id` (a file part, or an item id), `threshold`;
- application/x-www-form-urlencoded: `a_id`, `b_id`, `threshold` (no files);
- application/json: `{"a_id": 89, "b_id": 3, "threshold": 0.8}`.

Read as a query body is (query_body.py: form text as the JSON value it spells, one strict model,
unknown fields refused); each side must be given exactly once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, AsyncIterator

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData, UploadFile

from siamcli.serve.config import MAX_ITEM_ID
from siamcli.serve.query_body import ID_SCHEMA, IMAGE_SCHEMA, JSON, MULTIPART, URLENCODED, Integer, form_fields, invalid, read_body, validated

SIDES = ("a", "b")
ACCEPTED = f"{MULTIPART} (a and b: files or item ids), {URLENCODED} or {JSON} (a_id and b_id)"
FIELDS = f"a and b (files, in {MULTIPART} only), a_id, b_id and threshold"
THRESHOLD_SCHEMA = {"type": "number", "minimum": -1, "maximum": 1,
                    "description": "Match when the cosine similarity is at least this, instead of the run's calibrated threshold."}


class PairFields(BaseModel):
    """A verify body's fields besides its files (each side's presence is checked after: `_pair`).

    Absent, a field is None (a default is not validated); given, it must be of its type, so an
    explicit null is refused as the schema says (it allows no null)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    a_id: Annotated[Integer, Field(ge=0, le=MAX_ITEM_ID)] = None  # type: ignore[assignment]
    b_id: Annotated[Integer, Field(ge=0, le=MAX_ITEM_ID)] = None  # type: ignore[assignment]
    threshold: Annotated[float, Field(ge=-1, le=1)] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Pair:
    """One verify request, read and checked: each side an upload or a gallery item id."""

    a: UploadFile | int
    b: UploadFile | int
    threshold: float | None

    @property
    def uploads(self) -> list[UploadFile]:
        return [side for side in (self.a, self.b) if isinstance(side, UploadFile)]


@contextlib.asynccontextmanager
async def read_pair(request: Request) -> AsyncIterator[Pair]:
    """The request's body as a Pair (uploads open until the block ends); 415 for a body of another
    type, 422 for an invalid one (a side missing or given twice among them)."""
    async with read_body(request, ACCEPTED, lambda body: _pair({}, validated(lambda: PairFields.model_validate_json(body), FIELDS)),
                         _from_form) as pair:
        yield pair


def _from_form(form: FormData, files: bool) -> Pair:
    uploads = {}
    for side in SIDES if files else ():
        parts = form.getlist(side)
        if len(parts) > 1:
            invalid(side, msg=f"one image per field, got {len(parts)}; verify compares two images, a and b")
        if parts and not isinstance(parts[0], UploadFile):
            invalid(side, msg="must be a file (a form part with a filename)")
        if parts:
            uploads[side] = parts[0]
    fields = form_fields(form, files=SIDES if files else ())
    return _pair(uploads, validated(lambda: PairFields.model_validate(fields), FIELDS))


def _pair(uploads: dict[str, UploadFile], fields: PairFields) -> Pair:
    sides = []
    for side in SIDES:
        item = getattr(fields, f"{side}_id")
        if side in uploads and item is not None:
            invalid(side, msg=f"give image {side} once: a file part {side} or a gallery item id {side}_id, not both")
        if side not in uploads and item is None:
            invalid(side, msg=f"missing: give image {side} as a file part {side} (multipart/form-data) or a gallery item id {side}_id")
        sides.append(uploads.get(side, item))
    return Pair(sides[0], sides[1], fields.threshold)


def openapi_request_body() -> dict:
    """The three bodies in OpenAPI: each side a file or an id in a multipart form, ids elsewhere."""
    ids = {f"{side}_id": {**ID_SCHEMA, "description": f"Image {side}: a gallery item (its stored vector)."} for side in SIDES}
    by_ids = {"type": "object", "properties": {**ids, "threshold": THRESHOLD_SCHEMA}, "required": ["a_id", "b_id"],
              "additionalProperties": False}
    files = {side: {**IMAGE_SCHEMA, "description": f"Image {side}: an uploaded file."} for side in SIDES}
    multipart = {"type": "object", "properties": {**files, **by_ids["properties"]}, "additionalProperties": False,
                 "allOf": [{"oneOf": [{"required": [side]}, {"required": [f"{side}_id"]}]} for side in SIDES],
                 "description": "Each of a and b once: a file part, or a gallery item id (a_id, b_id)."}
    return {"required": True, "content": {
        MULTIPART: {"schema": multipart, "encoding": {side: {"contentType": "application/octet-stream"} for side in SIDES}},
        URLENCODED: {"schema": by_ids},
        JSON: {"schema": by_ids, "example": {"a_id": 89, "b_id": 81}},
    }}
