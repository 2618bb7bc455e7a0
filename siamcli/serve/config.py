"""ServeOptions: what `siamcli serve` was asked for, checked before anything heavy is imported."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from siamcli.errors import UserError

MAX_K = 1000  # neighbours per query image; the API refuses more (422)
MAX_IMAGES_PER_REQUEST = 64  # uploads, and ids, in one query request (64 of each at most; more → 422)
# The largest item id (and offset) the API takes, larger: 422. The largest integer a JSON number
# holds exactly (JavaScript's MAX_SAFE_INTEGER): the schema's bound means what it says to any client.
MAX_ITEM_ID = 2**53 - 1
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # run dir or model.keras; None → the index's own model
    index: str | None = None  # index dir; None → <model run>/index, else runs/latest/index
    host: str = "127.0.0.1"  # loopback unless asked otherwise
    port: int = 8000
    token: str | None = None  # bearer token the API requires; None → open (loopback only, warned)
    max_upload_mb: float = 20.0  # request body limit → 413
    max_batch: int = 32  # images per forward pass
    batch_wait_ms: float = 2.0  # how long a batch may wait for requests still being decoded
    max_queue: int = 128  # images admitted and not yet answered; past it → 503 + Retry-After
    decode_threads: int = 2  # uploads decoded in parallel, off the event loop
    search_threads: int = 1  # FAISS (OpenMP) threads per batch search
    watch_interval: float = 1.0  # seconds between checks of the index directory; 0: never reload
    cors_origins: tuple[str, ...] = field(default_factory=tuple)  # CORS off unless given
    log_level: str = "info"
    access_log: bool = False  # one log line per request (uvicorn's)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def exposed(self) -> bool:
        """True when the host is reachable from other machines (not a loopback address)."""
        return not is_loopback(self.host)


def exposure_warning(options: ServeOptions) -> str | None:
    """The warning for a service other machines can reach without a token, else None."""
    if options.exposed and options.token is None:
        return (f"--host {options.host} makes the service reachable from other machines without a token: "
                "anyone who can connect can search the gallery and see its images; set --token (or SIAMCLI_TOKEN)")
    return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable


def validate(options: ServeOptions) -> ServeOptions:
    """Refuse impossible values with a message that names the option."""
    checks = [
        (0 <= options.port <= 65535, f"--port must be 0..65535 (0: any free port), got {options.port}"),
        (options.max_upload_mb > 0, f"--max-upload-mb must be positive, got {options.max_upload_mb}"),
        (1 <= options.max_batch <= 1024, f"--max-batch must be 1..1024, got {options.max_batch}"),
        (0 <= options.batch_wait_ms <= 1000, f"--batch-wait-ms must be 0..1000, got {options.batch_wait_ms}"),
        (options.max_queue >= 1, f"--max-queue must be at least 1, got {options.max_queue}"),
        (1 <= options.decode_threads <= 64, f"--decode-threads must be 1..64, got {options.decode_threads}"),
        (1 <= options.search_threads <= 256, f"--search-threads must be 1..256, got {options.search_threads}"),
        (options.watch_interval >= 0, f"--watch-interval must be 0 (off) or positive, got {options.watch_interval}"),
        (options.token is None or len(options.token) >= 8, "--token must be at least 8 characters (or unset)"),
        (options.log_level in ("critical", "error", "warning", "info", "debug"),
         f"--log-level must be critical, error, warning, info or debug, got {options.log_level!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    for origin in options.cors_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise UserError(f"--cors-origin must be an origin such as https://example.org, got {origin!r}")
    return options
