"""Run the service: load model and index, bind the socket, serve with uvicorn, stop gracefully.

The socket is bound here once model and index are loaded (a bad index fails before anything
listens), before uvicorn starts, so a port in use is a one-line error (exit 2) and `--port 0`
can pick a free port and say which. On SIGTERM uvicorn stops accepting
connections, lets in-flight requests finish (up to GRACEFUL_SECONDS), then the lifespan stops
the batch worker; uvicorn then re-raises the signal it caught, which would kill the process
with status -15, so a handled SIGTERM is made a clean exit (0) instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import socket
import sys
from typing import Callable, Iterator

import numpy as np

from siamcli.errors import UserError
from siamcli.serve.config import ServeOptions

GRACEFUL_SECONDS = 30  # longest wait for in-flight requests after SIGTERM
log = logging.getLogger("siamcli.serve")


def require_dependencies() -> None:
    """The service's packages are an optional part of the install; say how to get them."""
    missing = []
    for modules, package in ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"), (("python_multipart", "multipart"), "python-multipart")):
        if not any(importlib.util.find_spec(module) for module in modules):
            missing.append(package)
    if missing:
        raise UserError(f"siamcli serve needs {', '.join(missing)}: pip install 'siamcli[serve]' (or pip install {' '.join(missing)})")


def serve(options: ServeOptions, on_ready: Callable[[str], None] | None = None) -> None:
    """Load everything, then serve until SIGTERM or Ctrl-C."""
    require_dependencies()
    import uvicorn

    from siamcli.serve.app import create_app
    from siamcli.serve.service import make_service
    from siamcli.serve.state import open_state

    _configure_logging(options.log_level)
    state = open_state(options.index, options.model)
    warm_up(state)
    sock = bind(options.host, options.port)
    service = make_service(options, state)
    config = uvicorn.Config(create_app(service), log_level=options.log_level, access_log=options.access_log,
                            timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if on_ready:
        on_ready(f"serving {state.snapshot.count} images from {state.directory} on {url} (Ctrl-C or SIGTERM stops)")
    with _sigterm_is_clean():
        server.run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a UserError that says what to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host} is not an address this machine has ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port (0 picks a free one)") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def warm_up(state) -> None:
    """Trace the forward pass and touch the index once, so the first request is not the slow one."""
    from siamcli.serve.batcher import Job
    from siamcli.serve.searcher import Query, Searcher

    image = np.zeros((state.image_size, state.image_size, 3), np.uint8)
    Searcher(state, 1)([Job(size=1, payload=Query(["warm-up"], [image], None, 1))])


@contextlib.contextmanager
def _sigterm_is_clean() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: log.info("stopped by SIGTERM after finishing in-flight requests"))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
