"""Group commit: work items that arrive together share one transaction.

A transaction costs more than the few statements of one item (a webhook's dedup key, a handler's
rows), so whatever has queued up while the previous batch ran goes into the next one, up to
`max_batch`: batches grow with load and stay at one item when idle, adding no wait of their own.
If a batch fails, its items run again one by one, so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Item(Generic[T, R]):
    value: T
    done: asyncio.Future[R]

    def settle(self, result: R | None = None, error: BaseException | None = None) -> None:
        if self.done.done():  # the caller stopped waiting (cancelled at shutdown)
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(result)  # type: ignore[arg-type]


class GroupCommit(Generic[T, R]):
    def __init__(
        self, run: Callable[[list[T]], Awaitable[list[R]]], *, name: str, max_batch: int = 100
    ) -> None:
        self.run = run
        self.name = name
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item[T, R]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, value: T) -> R:
        """Run `value` in the next batch; its result, or its own error."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"batch:{self.name}")
        item: _Item[T, R] = _Item(value, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.done

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._run(batch)

    async def _run(self, batch: list[_Item[T, R]]) -> None:
        try:
            results = await self.run([item.value for item in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].settle(error=exc)
                return
            for item in batch:
                await self._run([item])
            return
        for item, result in zip(batch, results, strict=True):
            item.settle(result)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
