"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

    siamcli_requests_total{route,method,status}     counter
    siamcli_requests_in_flight                      gauge: requests begun and not yet answered
    siamcli_request_seconds{route}                  histogram of request latency
    siamcli_batch_images                            histogram of images per forward pass
    siamcli_queue_images / siamcli_queue_jobs       gauges: admitted images, jobs waiting for a batch
    siamcli_rejected_total{reason}                  counter: overload (503), too large (413)
    siamcli_index_items, siamcli_index_reloads_total, siamcli_index_refusals_total

Routes are labelled by their template (`/api/v1/items/{item_id}`), never the raw path, so odd
URLs cannot blow up the number of series.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {running}"]
        return out


class Metrics:
    """Thread-safe counters and histograms; gauges are read from callbacks when rendered."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batches = Histogram(BATCH_BUCKETS)
        self.rejected: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.in_flight = 0  # requests whose headers are in and whose answer is not yet sent
        self.gauge("siamcli_requests_in_flight", "HTTP requests begun (headers received) and not yet answered, this one included.",
                   lambda: self.in_flight)

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request answered (it was counted by `request_started`)."""
        with self._lock:
            self.in_flight -= 1
            self.requests[(route, method, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, images: int) -> None:
        with self._lock:
            self.batches.observe(images)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float], kind: str = "gauge") -> None:
        self.gauges[name] = (f"# HELP {name} {help_text}\n# TYPE {name} {kind}", read)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP siamcli_requests_total HTTP requests by route template, method and status.",
                     "# TYPE siamcli_requests_total counter"]
            for (route, method, status), count in sorted(self.requests.items()):
                lines.append(f'siamcli_requests_total{{route="{_escape(route)}",method="{method}",status="{status}"}} {count}')
            lines += ["# HELP siamcli_request_seconds Request latency in seconds.", "# TYPE siamcli_request_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("siamcli_request_seconds", f'route="{_escape(route)}"')
            lines += ["# HELP siamcli_batch_images Images per forward pass (micro-batch size).", "# TYPE siamcli_batch_images histogram"]
            lines += self.batches.lines("siamcli_batch_images", "")
            lines += ["# HELP siamcli_rejected_total Requests refused before any work: overload (503) or too large (413).",
                      "# TYPE siamcli_rejected_total counter"]
            lines += [f'siamcli_rejected_total{{reason="{reason}"}} {count}' for reason, count in sorted(self.rejected.items())]
        for name, (header, read) in self.gauges.items():
            lines += [header, f"{name} {_number(read())}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
