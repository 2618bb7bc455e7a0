"""siamcli serve"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from siamcli.cli.common import engine_errors, stderr, warn


def serve(
    model: Annotated[Optional[str], typer.Option(help="Run directory or model.keras to embed queries with; must be the index's model (default: the one in its manifest).")] = None,
    index: Annotated[Optional[str], typer.Option(help="Index directory (default: the index of --model's run, else runs/latest/index). Watched: a rebuilt index is picked up without a restart.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback without --token prints a warning.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start).")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="SIAMCLI_TOKEN", show_envvar=True, help="Require `Authorization: Bearer TOKEN` on the API and /metrics (the page asks for it once).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body; bigger uploads get 413.")] = 20.0,
    max_batch: Annotated[int, typer.Option(help="Most images per forward pass (concurrent requests are embedded together).")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a batch may wait for requests still being decoded.")] = 2.0,
    max_queue: Annotated[int, typer.Option(help="Images admitted and not yet answered; past it queries get 503 with Retry-After.")] = 128,
    decode_threads: Annotated[int, typer.Option(help="Threads decoding uploads and thumbnails.")] = 2,
    search_threads: Annotated[int, typer.Option(help="FAISS threads per batch search (more only pays for very large indexes on many cores).")] = 1,
    watch_interval: Annotated[float, typer.Option(help="Seconds between checks for a rebuilt index (0: never reload).")] = 1.0,
    cors_origin: Annotated[Optional[List[str]], typer.Option(help="Allow browser pages from this origin to call the API (repeatable; CORS is off without it).")] = None,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log", help="Log one line per request.")] = False,
) -> None:
    """Serve searches over HTTP: a JSON API under /api/v1 and a web page at / (model and index loaded once).

    Concurrent queries are embedded together in micro-batches. The index directory is watched: `siamcli index --append/--prune/--force` is picked up without a restart (an index built with another model is refused and the old one keeps serving). API docs at /docs; health at /healthz and /readyz; Prometheus metrics at /metrics.
    """
    with engine_errors():
        from siamcli.serve.config import ServeOptions, exposure_warning, validate

        options = validate(ServeOptions(
            model=model, index=index, host=host, port=port, token=token or None, max_upload_mb=max_upload_mb,
            max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_queue=max_queue, decode_threads=decode_threads, search_threads=search_threads,
            watch_interval=watch_interval, cors_origins=tuple(cors_origin or ()), log_level=log_level, access_log=access_log,
        ))
        warning = exposure_warning(options)
        if warning:
            warn(warning)
        from siamcli.serve.server import serve as run_server

        run_server(options, on_ready=lambda line: stderr.print(f"[bold]siamcli serve[/bold]: {line}", soft_wrap=True))
