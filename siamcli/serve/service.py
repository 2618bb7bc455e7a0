"""Service: everything a request handler needs, made once per server and passed to the routes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from siamcli.serve.batcher import MicroBatcher
from siamcli.serve.config import ServeOptions
from siamcli.serve.images import Thumbnails
from siamcli.serve.metrics import Metrics
from siamcli.serve.searcher import Searcher
from siamcli.serve.state import ServingState


@dataclass
class Service:
    options: ServeOptions
    state: ServingState
    batcher: MicroBatcher
    metrics: Metrics
    thumbnails: Thumbnails = field(default_factory=Thumbnails)
    pool: ThreadPoolExecutor | None = None  # decoding and thumbnails, off the event loop

    async def blocking(self, function, *args):
        """Run a blocking function on the decode pool and await it."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(function, *args))

    def start(self) -> None:
        """Inside the event loop: the batch worker, the decode pool and the index watcher."""
        self.pool = ThreadPoolExecutor(max_workers=self.options.decode_threads, thread_name_prefix="siamcli-decode")
        self.batcher.start()
        self.state.watch(self.options.watch_interval)

    async def stop(self) -> None:
        """After in-flight requests have finished: stop the worker, the pool and the watcher."""
        await self.batcher.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.state.close()


def make_service(options: ServeOptions, state: ServingState) -> Service:
    metrics = Metrics()
    batcher = MicroBatcher(Searcher(state, options.max_batch, options.search_threads), max_batch=options.max_batch,
                           max_wait=options.batch_wait_ms / 1000, capacity=options.max_queue, on_batch=metrics.observe_batch)
    metrics.gauge("siamcli_queue_images", "Images admitted and not yet answered (decoding, queued or in a forward pass).", lambda: batcher.admitted)
    metrics.gauge("siamcli_queue_jobs", "Requests waiting for a micro-batch.", lambda: batcher.queued)
    metrics.gauge("siamcli_index_items", "Items in the index now serving.", lambda: state.snapshot.count)
    metrics.gauge("siamcli_index_reloads_total", "Index swaps picked up without a restart.", lambda: state.reloads, kind="counter")
    metrics.gauge("siamcli_index_refusals_total", "Changed indexes refused (another model, damaged); the previous one kept serving.",
                  lambda: state.refusals, kind="counter")
    return Service(options=options, state=state, batcher=batcher, metrics=metrics)
