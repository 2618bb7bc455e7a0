"""The micro-batching queue: concurrent requests share one forward pass and one FAISS call.

A request is first *admitted* (a bounded count of images: past it the caller answers 503 with
Retry-After, so memory never grows with load), then decodes its uploads on a thread pool, then
*submits* a job. One worker task takes the first job waiting and gathers more until the batch
holds `max_batch` images; it waits up to `max_wait` seconds for more only while admitted
requests are still decoding (others are on their way), so a lone client never waits at all.
The batch is processed by one blocking call on a dedicated thread, and while that runs the next
batch forms in the queue: the busier the service, the bigger its batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

log = logging.getLogger("siamcli.serve")


class QueueFull(Exception):
    """More images are admitted than the queue holds; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int = 1):
        super().__init__(f"the service is at capacity; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    size: int  # images this job adds to a batch (0 for a job with stored vectors only)
    payload: Any  # what `process` needs (pixels, vectors, k, names)
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]


class MicroBatcher:
    """Run `process(jobs) -> results` (blocking, one result per job) over gathered batches."""

    def __init__(self, process: Callable[[Sequence[Job]], list], *, max_batch: int, max_wait: float, capacity: int,
                 on_batch: Callable[[int], None] | None = None):
        self.process = process
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.capacity = capacity
        self.on_batch = on_batch or (lambda images: None)
        self.admitted = 0  # images admitted and not yet answered (decoding, queued or running)
        self.decoding = 0  # admitted requests that have not submitted their job yet
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siamcli-model")

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def full(self) -> bool:
        return self.admitted >= self.capacity

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="siamcli-batcher")

    async def close(self) -> None:
        """Stop the worker (after the server has finished its in-flight requests)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def admit(self, images: int) -> Iterator["Ticket"]:
        """Reserve room for `images` until the block ends, or raise QueueFull.

        An idle service admits any single request, so one larger than the queue still runs.
        """
        if self.admitted and self.admitted + images > self.capacity:
            raise QueueFull()
        ticket = Ticket(self)
        self.admitted += images
        self.decoding += 1
        try:
            yield ticket
        finally:
            self.admitted -= images
            if not ticket.submitted:
                self.decoding -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(loop)
            images = sum(job.size for job in batch)
            if images:
                self.on_batch(images)
            try:
                results = await loop.run_in_executor(self._executor, self.process, batch)
            except Exception as exc:  # noqa: BLE001 — every waiting request hears of it, the worker lives on
                log.exception("a batch of %d jobs failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():  # the client may have gone away
                    job.future.set_result(result)

    async def _gather(self, loop) -> list[Job]:
        batch = [await self._queue.get()]
        size = batch[0].size
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if self.decoding == 0 or remaining <= 0:
                    break  # nobody else is on the way, or waited long enough
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(job)
            size += job.size
        return batch


class Ticket:
    """An admitted request: it submits one job once its images are decoded."""

    def __init__(self, batcher: MicroBatcher):
        self.batcher = batcher
        self.submitted = False

    async def submit(self, size: int, payload: Any) -> Any:
        """Queue the job (`size` images to embed) and wait for its result."""
        batcher = self.batcher
        job = Job(size=size, payload=payload, future=asyncio.get_running_loop().create_future())
        self.submitted = True
        batcher.decoding -= 1
        batcher._queue.put_nowait(job)
        return await job.future
