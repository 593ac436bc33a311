"""In-process bus for embedded mode: same routing, retries and dead-lettering as RabbitMQ.

Durability comes from the producers' outboxes: `publish` resolves only when every subscribed group
has handled (or dead-lettered) the event, and the outbox relay deletes its rows only after that.
A crash in between leaves the rows to be published again, and idempotent handlers absorb the repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.common.bus.base import Bus, Subscription, topic_matches
from libs.common.envelope import Envelope

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Delivery:
    envelope: Envelope
    done: asyncio.Future[None]
    attempts: int = 0


@dataclass
class _Group:
    subscription: Subscription
    queue: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class InMemoryBus(Bus):
    def __init__(self, *, max_attempts: int, retry_delay_s: float, concurrency: int = 8) -> None:
        super().__init__(max_attempts=max_attempts, retry_delay_s=retry_delay_s)
        self.concurrency = concurrency
        self.dead_letters: dict[str, list[Envelope]] = defaultdict(list)
        self._groups: list[_Group] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._unsettled: set[_Delivery] = set()

    async def start(self) -> None:
        self._groups = [_Group(s) for s in self.subscriptions]
        for group in self._groups:
            group.workers = [
                asyncio.create_task(self._work(group), name=f"bus:{group.subscription.group}")
                for _ in range(self.concurrency)
            ]
        self.started = True

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not self.started:
            raise RuntimeError("the bus is not started")
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            for group in self._groups:
                if any(topic_matches(p, envelope.type) for p in group.subscription.patterns):
                    delivery = _Delivery(envelope, loop.create_future())
                    self._unsettled.add(delivery)
                    group.queue.put_nowait(delivery)
                    pending.append(delivery.done)
        if pending:
            await asyncio.gather(*pending)

    def _settle(self, delivery: _Delivery, error: Exception | None = None) -> None:
        # The publisher may have gone (cancelled): settle only what still waits.
        self._unsettled.discard(delivery)
        if not delivery.done.done():
            if error is None:
                delivery.done.set_result(None)
            else:
                delivery.done.set_exception(error)

    async def _work(self, group: _Group) -> None:
        sub = group.subscription
        while True:
            delivery = await group.queue.get()
            delivery.attempts += 1
            extra = {"group": sub.group, "event_id": delivery.envelope.id}
            try:
                await sub.handler(delivery.envelope)
            except Exception:
                if delivery.attempts >= self.max_attempts:
                    log.exception("dead-lettered after %d attempts", delivery.attempts, extra=extra)
                    self.dead_letters[sub.group].append(delivery.envelope)
                    self._settle(delivery)
                else:
                    log.warning("handler failed, retrying", exc_info=True, extra=extra)
                    self._retry_later(group, delivery)
            else:
                self._settle(delivery)

    def _retry_later(self, group: _Group, delivery: _Delivery) -> None:
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._timers.discard(handle)
            group.queue.put_nowait(delivery)

        handle = loop.call_later(self.retry_delay_s, requeue)
        self._timers.add(handle)

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        workers = [w for g in self._groups for w in g.workers]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # Unblock publishers: their outbox rows stay and are published again on the next start.
        for delivery in list(self._unsettled):
            self._settle(delivery, ConnectionError("bus stopped"))
        self.started = False

    def ready(self) -> bool:
        return self.started
