"""What `POST /api/v1/query` accepts, read and validated once for its three body types, and the
OpenAPI request body that says exactly that.

- multipart/form-data: `images` (files) and/or `id` (repeatable), `k`, `exclude_self`;
- application/x-www-form-urlencoded: `id` (repeatable), `k`, `exclude_self` (no files);
- application/json: `{"id": 89 or [89, 3], "k": 3, "exclude_self": true}` (search by id).

FastAPI cannot declare one route taking either a form or JSON, so the route reads the body
itself and its schema comes from here. Form fields are text: an integer is its decimal digits, a
number as JSON writes it, a boolean `true` or `false`; they are then checked by the same strict
model as a JSON body, so both refuse the same things with the same words. Unknown fields are refused, not ignored (a typo such
as `exclude-self` must not silently change nothing).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Annotated, AsyncIterator, Callable, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.datastructures import FormData, UploadFile

from siamcli.serve.config import MAX_IMAGES_PER_REQUEST, MAX_ITEM_ID, MAX_K

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

JSON, MULTIPART, URLENCODED = "application/json", "multipart/form-data", "application/x-www-form-urlencoded"
ACCEPTED = f"{MULTIPART} (images and/or id), {URLENCODED} or {JSON} (id)"
FIELDS = f"images (in {MULTIPART} only), id, k and exclude_self"
FORM_INTEGER = re.compile(r"-?[0-9]{1,30}")  # longer is no id or k anyway (and int() of 5,000 digits raises)
FORM_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?")  # JSON's number syntax
FORM_BOOLEAN = {"true": True, "false": False}
ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_ITEM_ID}
IDS_SCHEMA = {
    "anyOf": [ID_SCHEMA, {"type": "array", "items": ID_SCHEMA, "minItems": 1, "maxItems": MAX_IMAGES_PER_REQUEST}],
    "description": "Gallery item ids to search by (their stored vectors): one, or a list (in a form, repeat the field).",
}
IMAGE_SCHEMA = {"type": "string", "contentMediaType": "application/octet-stream"}
# Repeated parts are an array to OpenAPI, so a single image is an array of one; a single id is
# said to be an integer as well, since some clients (schemathesis among them) tell the two apart.
IMAGES_SCHEMA = {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"}, "minItems": 1,
                 "maxItems": MAX_IMAGES_PER_REQUEST, "description": "Query images, each a file part (repeat the field for several)."}


def _whole(value):
    """JSON Schema's integer: 375.0 is one (strict pydantic alone would refuse it)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _one_id_is_a_list(value):
    return [_whole(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Integer = Annotated[int, BeforeValidator(_whole)]
ItemIds = Annotated[list[Annotated[Integer, Field(ge=0, le=MAX_ITEM_ID)]], Field(min_length=1, max_length=MAX_IMAGES_PER_REQUEST),
                    BeforeValidator(_one_id_is_a_list), WithJsonSchema(IDS_SCHEMA)]


class Options(BaseModel):
    """A query's settings; with images only, the whole of a form besides its files."""

    model_config = ConfigDict(extra="forbid", strict=True)
    k: Integer = Field(5, ge=1, le=MAX_K, description="Neighbours per query.")
    exclude_self: bool = Field(False, description="When searching by id: leave the item itself out of its own results, so k others "
                                                  "are returned (no effect on uploads).")


class ByIds(Options):
    """A search by gallery item ids: a JSON body, or a form that names ids."""

    id: ItemIds


@dataclass(frozen=True)
class Asked:
    """One query request, read and checked: its uploads first, then its ids."""

    uploads: list[UploadFile]
    ids: list[int]
    k: int
    exclude_self: bool


@contextlib.asynccontextmanager
async def read_query(request: Request) -> AsyncIterator[Asked]:
    """The request's body as an Asked (the uploads stay open until the block ends); 415 for a
    body of another type, 422 for an invalid one."""
    async with read_body(request, ACCEPTED, lambda body: _checked([], lambda: ByIds.model_validate_json(body)), _from_form) as asked:
        yield asked


def _from_form(form: FormData, files: bool) -> Asked:
    uploads = form.getlist("images") if files else []
    not_files = [position for position, upload in enumerate(uploads) if not isinstance(upload, UploadFile)]
    if not_files:
        invalid("images", not_files[0], msg="must be a file (a form part with a filename)")
    if len(uploads) > MAX_IMAGES_PER_REQUEST:
        invalid("images", msg=f"at most {MAX_IMAGES_PER_REQUEST} images per request, got {len(uploads)}")
    fields = form_fields(form, files=("images",) if files else (), lists=("id",))
    if not uploads and "id" not in fields:
        invalid(msg="give at least one image (or id)")  # the body's fault, not one field's: neither is required alone
    return _checked(uploads, lambda: (ByIds if "id" in fields else Options).model_validate(fields))


def _checked(uploads: list[UploadFile], validate) -> Asked:
    options = validated(validate, FIELDS)
    return Asked(uploads, getattr(options, "id", []), options.k, options.exclude_self)


# ---- what every body of the API shares (verify's too: pair_body.py) -------------------------------
@contextlib.asynccontextmanager
async def read_body(request: Request, accepted: str, from_json: Callable[[bytes], T], from_form: Callable[[FormData, bool], T]) -> AsyncIterator[T]:
    """`from_json(body)` or `from_form(form, files allowed)` of the request, by its Content-Type
    (a form's uploads stay open until the block ends); 415 for a body of another type."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind == JSON:
        yield from_json(await request.body())
    elif kind in (MULTIPART, URLENCODED):
        async with request.form() as form:
            yield from_form(form, kind == MULTIPART)
    else:
        raise HTTPException(415, f"the body must be {accepted}, got {kind or 'no Content-Type'}")


def form_fields(form: FormData, files: tuple[str, ...] = (), lists: tuple[str, ...] = ()) -> dict:
    """A form's fields besides its `files`, each as the JSON value its text spells; a field
    given more than once, or named in `lists`, as a list (for the model to take or refuse)."""
    fields = {name: [form_value(v) for v in form.getlist(name)] for name in form if name not in files}
    return {name: values if name in lists or len(values) > 1 else values[0] for name, values in fields.items()}


def form_value(value):
    """A form field's text as the JSON value it spells (else as it is, for the model to refuse)."""
    if isinstance(value, str):
        if FORM_INTEGER.fullmatch(value):
            return int(value)
        if FORM_NUMBER.fullmatch(value):
            return float(value)
        return FORM_BOOLEAN.get(value, value)
    return value


def validated(validate: Callable[[], M], fields: str) -> M:
    """`validate()`'s model, or a 422 that says each error as the API says it (`fields`: the body's
    fields in words, for an unknown one)."""
    try:
        return validate()
    except ValidationError as exc:
        raise RequestValidationError([_said(error, fields) for error in exc.errors()]) from None


def _said(error: dict, fields: str) -> dict:
    """A model's error as the API says it: located in the body, an unknown field named as such."""
    if error["type"] == "extra_forbidden":
        error = {**error, "msg": f"unknown field; the fields are {fields}"}
    return {**error, "loc": ("body", *error["loc"])}


def invalid(*loc, msg: str):
    """Raise the 422 of a body whose problem no model says (`loc`: where, inside the body)."""
    raise RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg}])


def openapi_request_body() -> dict:
    """The three bodies in OpenAPI: a form needs images or an id, JSON an id; nothing else is accepted."""
    by_ids = {key: value for key, value in ByIds.model_json_schema().items() if key != "title"}
    multipart = {key: value for key, value in by_ids.items() if key != "required"}
    multipart.update(properties={"images": IMAGES_SCHEMA, **by_ids["properties"]}, anyOf=[{"required": ["images"]}, {"required": ["id"]}],
                     description="Query images and/or gallery item ids: at least one of the two.")
    return {"required": True, "content": {
        JSON: {"schema": by_ids, "example": {"id": [89], "k": 3, "exclude_self": True}},
        URLENCODED: {"schema": by_ids},
        MULTIPART: {"schema": multipart, "encoding": {"images": {"contentType": "application/octet-stream"}}},
    }}
