"""What every bus transport promises.

- `publish` returns only when every envelope is durably accepted (a broker confirm for RabbitMQ;
  for the in-process bus, once every subscribed group has handled or dead-lettered it, so that the
  producer's outbox row, deleted after `publish`, is the durable copy until then).
- Each subscription is a consumer group: every group gets every matching event once, at least once;
  replicas of a service share their groups' queues.
- A handler that raises is retried after `retry_delay_s`, `max_attempts` times in all, then the
  event is dead-lettered. Handlers must be idempotent (see `libs.common.handlers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from libs.common.envelope import Envelope

Handler = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    group: str
    """Consumer group, `<service>.<handler>`; names the durable queue."""
    patterns: tuple[str, ...]
    """Topic patterns (event types, `*` one word, `#` any words)."""
    handler: Handler


class Bus(ABC):
    def __init__(self, *, max_attempts: int, retry_delay_s: float) -> None:
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.subscriptions: list[Subscription] = []
        self.retired: list[str] = []
        self.started = False

    def subscribe(self, group: str, patterns: Sequence[str], handler: Handler) -> None:
        if self.started:
            raise RuntimeError("subscribe before the bus starts: topology is declared at start")
        if any(s.group == group for s in self.subscriptions):
            raise ValueError(f"consumer group {group!r} is subscribed twice")
        self.subscriptions.append(Subscription(group, tuple(patterns), handler))

    def retire(self, group: str) -> None:
        """A consumer group that is no more: a transport whose queues outlive the process
        removes its queue at start, or the queue's bindings would keep filling it."""
        if self.started:
            raise RuntimeError("retire before the bus starts: topology is declared at start")
        self.retired.append(group)

    @abstractmethod
    async def start(self) -> None:
        """Connect, declare the topology and start consuming."""

    @abstractmethod
    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish, returning once all are durably accepted; raise if any is not."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def ready(self) -> bool:
        """Connected, and every subscription has a consumer."""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic semantics (`*` one word, `#` zero or more), so both transports route alike."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=1024)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
