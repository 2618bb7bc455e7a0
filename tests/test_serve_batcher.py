"""The micro-batching queue on its own (no model): batches form under concurrency, a lone request
never waits, the queue is bounded, a failing batch fails its requests only."""

from __future__ import annotations

import asyncio
import time

import pytest

from siamcli.serve.batcher import MicroBatcher, QueueFull


class Recorder:
    """A `process` that takes `seconds` per batch and answers each job with its payload doubled."""

    def __init__(self, seconds: float = 0.02, fail_on: int | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []

    def __call__(self, jobs):
        self.batches.append([job.payload for job in jobs])
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in self.batches[-1]:
            raise RuntimeError("boom")
        return [job.payload * 2 for job in jobs]


async def ask(batcher: MicroBatcher, value: int, decode_seconds: float = 0.0) -> int:
    with batcher.admit(1) as ticket:
        await asyncio.sleep(decode_seconds)  # decoding, off the loop in the service
        return await ticket.submit(1, value)


def run(coroutine_function, process, **options):
    async def main():
        batcher = MicroBatcher(process, **{"max_batch": 8, "max_wait": 0.01, "capacity": 64, **options})
        batcher.start()
        try:
            return await coroutine_function(batcher)
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    process = Recorder()
    answers = run(lambda b: asyncio.gather(*(ask(b, v) for v in range(40))), process)
    assert answers == [v * 2 for v in range(40)]
    assert sorted(v for batch in process.batches for v in batch) == list(range(40))
    assert max(len(batch) for batch in process.batches) == 8  # full batches under load
    assert len(process.batches) <= 8


def test_a_lone_request_does_not_wait_for_company():
    process = Recorder(seconds=0)

    async def one(batcher):
        started = time.perf_counter()
        await ask(batcher, 1)
        return time.perf_counter() - started

    assert run(one, process, max_wait=2.0) < 1.0  # nobody else is decoding: no 2 s wait


def test_a_batch_waits_briefly_for_requests_still_decoding():
    process = Recorder(seconds=0)
    run(lambda b: asyncio.gather(ask(b, 1), ask(b, 2, decode_seconds=0.02)), process, max_wait=0.5)
    assert process.batches == [[1, 2]]


def test_the_queue_is_bounded_and_an_idle_service_admits_a_big_request():
    async def scenario(batcher):
        with batcher.admit(3):
            with pytest.raises(QueueFull) as refused:
                with batcher.admit(2):
                    pass
            assert refused.value.retry_after >= 1
            assert batcher.full is False and batcher.admitted == 3
        assert batcher.admitted == 0 and batcher.decoding == 0
        with batcher.admit(10):  # more than the capacity, but nothing else is admitted
            assert batcher.full

    run(scenario, Recorder(), capacity=4)


def test_a_failing_batch_fails_its_requests_and_the_worker_lives_on():
    process = Recorder(fail_on=13)

    async def scenario(batcher):
        with pytest.raises(RuntimeError):
            await ask(batcher, 13)
        return await ask(batcher, 4)

    assert run(scenario, process) == 8
