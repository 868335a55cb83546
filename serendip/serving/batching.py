"""Dynamic batching (Triton's ``dynamic_batching``) for the KServe fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.codec import Outputs


class MicroBatcher:
    """Triton's dynamic batching for the KServe fallback: requests arriving within
    ``max_delay_s`` of each other (up to ``max_batch``) go to ``handler.infer`` together, in
    one worker thread (torch is single-threaded here), so the event loop keeps accepting."""

    def __init__(self, handler, max_batch: int = 8, max_delay_s: float = 0.002):
        from concurrent.futures import ThreadPoolExecutor

        self.handler, self.max_batch, self.max_delay_s = handler, max_batch, max_delay_s
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=handler.spec.name)

    async def submit(self, arrays: Mapping[str, np.ndarray]) -> Outputs | SerendipError:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.ensure_future(self._run())
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((arrays, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_delay_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(
                    self._pool, self.handler.infer, [a for a, _ in batch])
            except Exception as e:  # noqa: BLE001 — every waiter gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
