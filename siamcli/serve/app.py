"""The FastAPI application: the API, the page, health and metrics, and the middleware around them.

Middleware, outermost first: request metrics → security headers → CORS (only with
--cors-origin) → body limit (413) → load shedding (503 before a query's or verify's body is read) → routes.
"""

from __future__ import annotations

import contextlib
import time
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from siamcli import __version__
from siamcli.serve import api
from siamcli.serve.security import BodyLimit, PageHeaders, send_json, token_dependency
from siamcli.serve.service import Service

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}


def create_app(service: Service) -> FastAPI:
    """The ASGI app for one Service; its lifespan starts and stops the service's workers."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="siamcli", version=__version__, lifespan=lifespan,
                  description="Search a gallery of images by similarity: upload an image, get its nearest gallery images; "
                              "verify two images: the same identity or not.")
    app.state.service = service
    token = service.options.token
    app.include_router(api.router, dependencies=[Depends(token_dependency(token))] if token else [],
                       responses={401: {"model": api.Error}} if token else {})
    _add_health(app, service)
    _add_page(app)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(ShedLoad, service=service)  # added innermost first
    app.add_middleware(BodyLimit, limit=service.options.max_upload_bytes, on_reject=lambda: service.metrics.reject("too_large"))
    if service.options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(service.options.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(PageHeaders)
    app.add_middleware(RequestMetrics, service=service)
    return app


def _add_health(app: FastAPI, service: Service) -> None:
    state = service.state

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process is alive and answering."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict:
        """Model and index are loaded; `problem` says why a changed index was refused (the previous one still serves)."""
        snapshot = state.snapshot
        return {"ready": True, "items": snapshot.count, "model_fingerprint": state.fingerprint, "problem": state.problem}

    token = service.options.token

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             dependencies=[Depends(token_dependency(token))] if token else [])
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: requests, latency, batch sizes, queue depth, index reloads."""
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _add_page(app: FastAPI) -> None:
    files = resources.files("siamcli.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response((files / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:  # a fixed list: nothing else on disk is reachable
            raise HTTPException(404, "Not Found")
        return Response((files / name).read_bytes(), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, without echoing the input back (it may be a whole uploaded file)."""
    errors = [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug must still answer JSON (500), never a stack trace."""
    import logging

    logging.getLogger("siamcli.serve").exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


BATCHED = ("/api/v1/query", "/api/v1/verify")  # the routes whose images wait in the batcher's queue


class ShedLoad:
    """503 + Retry-After for a query or a verify while the queue is full, before its body is even read."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in BATCHED and self.service.batcher.full:
            self.service.metrics.reject("overload")
            return await send_json(send, 503, {"detail": "the service is at capacity; retry in 1 s"}, [(b"retry-after", b"1")])
        await self.app(scope, receive, send)


class RequestMetrics:
    """Count requests in flight, and every response by route template and status; time it."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app = app
        self.metrics = service.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500
        self.metrics.request_started()

        async def record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(template, scope["method"], status, time.perf_counter() - started)
