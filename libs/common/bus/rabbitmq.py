"""RabbitMQ transport (aio-pika).

Topology, declared at start and readable off the code:
- `<exchange>` (topic, durable): every event, routing key = event type.
- per consumer group `<exchange>.<group>`: a durable quorum queue bound to the group's patterns.
  A consumer that dies mid-message leaves it unacked and the broker redelivers it; the quorum
  `x-delivery-limit` dead-letters a message that keeps killing its consumers.
- `<queue>.retry`: a handler that raised puts the message here with an expiration; it expires
  back into the group's queue. The attempt count travels in the `x-attempts` header.
- `<queue>.dlq`, fed through the `<exchange>.dlx` direct exchange, after `max_attempts`.
- A retired group's queue and retry queue are deleted at start (`Bus.retire`).

Messages are persistent and published with confirms; a group's message is acked only after its
handler returned, i.e. after the handler's transaction committed. Acks are cumulative where they
can be (`_Acker`): a group-commit batch's messages cost one ack frame, not one each.

aio-pika keeps the connection and the channels open (robust: reopened after a network or channel
error, with their queues declared again), and declares the topology. Deliveries are consumed and
acked on the channel underneath (aiormq), as publishes are sent: aio-pika's message wrapper and
the task it starts for every delivery add nothing here but CPU. So a reopened channel's consumer
is started again here, by a reopen callback (`_Consumer`), not by aio-pika.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from libs.common.bus.base import Bus, Subscription
from libs.common.envelope import Envelope

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-attempts"
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
# Broker-side redeliveries (consumer crashes) before a poison message is dead-lettered.
DELIVERY_LIMIT = 10


def _tag(message: DeliveredMessage) -> int:
    tag = cast(Basic.Deliver, message.delivery).delivery_tag
    assert tag is not None  # consumed with manual acks: every delivery has one
    return tag


class _Acker:
    """Acks the messages one channel delivered, cumulatively where it can.

    `basic.ack` with `multiple` acks every unacked delivery up to its tag on the channel, so the
    messages finished in one event-loop turn (a group-commit batch) cost one frame. It may cover
    only finished messages: one still being handled bounds it, and the finished messages delivered
    after that one are acked one by one, so that a slow handler neither stalls the group (a
    prefetch window full of finished, unacked messages) nor gets them redelivered if the consumer
    dies.

    Delivery tags count one channel's deliveries from 1: a robust channel that reopens counts
    anew, with a new acker, and a message is acked on the channel that delivered it or not at all
    (closed, the channel gave its unacked messages back to the queue).
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._next = 1  # the tag of the next delivery
        # Delivered and not finished yet. A tag skipped on the way to a later one counts as
        # unfinished until it shows up, so an ack never covers a message that was not handled. A
        # message whose handler was cancelled (shutdown: its channel is closing) or whose
        # republish raised stays here for good; the messages after it are acked one by one.
        self._unfinished: set[int] = set()
        self._finished: list[int] = []  # tags not acked yet
        self._flusher: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        self._unfinished.update(range(self._next, tag + 1))
        self._next = max(self._next, tag + 1)

    def finished(self, tag: int) -> None:
        """Ack delivery `tag` soon: its handler returned, or it was republished."""
        self._unfinished.discard(tag)
        if self.channel.is_closed:
            return  # the broker took its unacked messages back
        self._finished.append(tag)
        if self._flusher is None:
            # The task runs after the handlers already woken in this turn: the messages of a
            # batch that committed together are acked together.
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._finished:
                done, self._finished = self._finished, []
                bound = min(self._unfinished, default=self._next)
                below = [tag for tag in done if tag < bound]
                if below:
                    # Also covers those acked alone earlier. Its own tag was never acked, which
                    # the broker requires (else a channel error).
                    await self.channel.basic_ack(max(below), multiple=True)
                for tag in done:
                    if tag > bound:
                        await self.channel.basic_ack(tag)
        except Exception:
            # The channel closed meanwhile: the broker redelivers whatever it did not ack.
            log.warning("acks not sent", exc_info=True)
        finally:
            self._flusher = None


class _Consumer:
    """A consumer group's consumer, on a robust channel of its own. It consumes on the channel
    underneath, and again each time aio-pika reopens the robust channel, with a new acker
    (delivery tags count anew on a new channel)."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: str,
        handle: Callable[[DeliveredMessage, _Acker], Awaitable[None]],
    ) -> None:
        self.channel, self.queue, self._handle = channel, queue, handle
        self._acker: _Acker | None = None
        self._tag: str | None = None  # the consumer tag on `_acker.channel`, once consuming
        channel.reopen_callbacks.add(self._reopened)

    async def start(self) -> None:
        underlay = await self.channel.get_underlay_channel()
        self._acker, self._tag = _Acker(underlay), None
        self._tag = (await underlay.basic_consume(self.queue, self._deliver)).consumer_tag

    async def _reopened(self, *_: Any) -> None:
        try:
            await self.start()
        except Exception:
            # aio-pika ignores what a reopen callback raises: say it, and stay not ready
            # (`consuming`, `/readyz`) until the channel reopens again.
            log.exception("not consuming from %s after its channel reopened", self.queue)

    async def _deliver(self, message: DeliveredMessage) -> None:
        acker = self._acker
        if acker is None or acker.channel is not message.channel or message.channel.is_closed:
            return  # delivered on a channel since closed: the broker redelivers it
        acker.delivered(_tag(message))
        await self._handle(message, acker)

    def consuming(self) -> bool:
        return (
            self._tag is not None and self._acker is not None and not self._acker.channel.is_closed
        )

    async def stop(self) -> None:
        self.channel.reopen_callbacks.discard(self._reopened)
        if self.consuming():
            assert self._acker and self._tag
            await self._acker.channel.basic_cancel(self._tag)


class RabbitBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        max_attempts: int,
        retry_delay_s: float,
        prefetch: int,
    ) -> None:
        super().__init__(max_attempts=max_attempts, retry_delay_s=retry_delay_s)
        self.url = url
        self.exchange_name = exchange
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dlx: AbstractExchange | None = None
        self._consumers: list[_Consumer] = []

    def queue_name(self, group: str) -> str:
        return f"{self.exchange_name}.{group}"

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url)
        self._publish_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._publish_channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._dlx = await self._publish_channel.declare_exchange(
            f"{self.exchange_name}.dlx", aio_pika.ExchangeType.DIRECT, durable=True
        )
        for group in self.retired:
            await self._remove(group)
        for sub in self.subscriptions:
            await self._consume(sub)
        self.started = True

    async def _consume(self, sub: Subscription) -> None:
        assert self._connection and self._exchange and self._dlx
        name = self.queue_name(sub.group)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": self._dlx.name,
                "x-dead-letter-routing-key": name,
            },
        )
        for pattern in sub.patterns:
            await queue.bind(self._exchange, routing_key=pattern)
        await channel.declare_queue(
            f"{name}.retry",
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
        )
        dlq = await channel.declare_queue(f"{name}.dlq", durable=True)
        await dlq.bind(self._dlx, routing_key=name)

        consumer = _Consumer(
            channel, name, lambda message, acker: self._handle(sub, name, message, acker)
        )
        await consumer.start()
        self._consumers.append(consumer)

    async def _remove(self, group: str) -> None:
        """Delete a retired group's queue and its retry queue; its dead letters stay for
        whoever inspects them. Messages still in the queue go with it: their events were
        meant for a handler that no longer exists."""
        assert self._publish_channel
        name = self.queue_name(group)
        for queue in (name, f"{name}.retry"):
            await self._publish_channel.queue_delete(queue)

    async def _handle(
        self, sub: Subscription, queue: str, message: DeliveredMessage, acker: _Acker
    ) -> None:
        properties = message.header.properties
        previous = (properties.headers or {}).get(ATTEMPTS_HEADER, 0)
        attempts = (previous if isinstance(previous, int) else 0) + 1
        try:
            envelope = Envelope.from_bytes(message.body)
            await sub.handler(envelope)
        except asyncio.CancelledError:
            raise  # shutting down: leave it unacked, the broker redelivers it
        except Exception as exc:
            if attempts >= self.max_attempts:
                log.exception(
                    "dead-lettered after %d attempts",
                    attempts,
                    extra={"group": sub.group, "event_id": properties.message_id},
                )
                await self._republish(message, self._dlx, queue, attempts, error=repr(exc))
            else:
                log.warning(
                    "handler failed, retrying in %.1fs",
                    self.retry_delay_s,
                    exc_info=True,
                    extra={"group": sub.group, "event_id": properties.message_id},
                )
                await self._republish(
                    message,
                    None,
                    f"{queue}.retry",
                    attempts,
                    expiration=self.retry_delay_s,
                )
        acker.finished(_tag(message))

    async def _republish(
        self,
        message: DeliveredMessage,
        exchange: AbstractExchange | None,
        routing_key: str,
        attempts: int,
        *,
        expiration: float | None = None,
        error: str | None = None,
    ) -> None:
        assert self._publish_channel
        properties = message.header.properties
        headers: dict[str, Any] = {**(properties.headers or {}), ATTEMPTS_HEADER: attempts}
        if error:
            headers["x-error"] = error[:1000]
        copy = aio_pika.Message(
            message.body,
            message_id=properties.message_id,
            content_type=properties.content_type,
            type=properties.message_type,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=expiration,
        )
        target = exchange or self._publish_channel.default_exchange
        await target.publish(copy, routing_key=routing_key, mandatory=True)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._publish_channel is None or self._publish_channel.is_closed:
            raise RuntimeError("the bus is not started")
        # Straight to the channel underneath (the robust channel's current one): aio-pika's
        # `Message` and `Exchange.publish` add nothing here but a third of a publish's CPU.
        # Events are broadcast facts: an event type nobody subscribes to yet is normal, so these
        # are not `mandatory`. Many publishes in flight on one channel keep their order, and
        # each waits for its confirm (a nack raises).
        channel = await self._publish_channel.get_underlay_channel()
        await asyncio.gather(
            *(
                channel.basic_publish(
                    e.to_bytes(),
                    exchange=self.exchange_name,
                    routing_key=e.type,
                    properties=aiormq.spec.Basic.Properties(
                        content_type="application/json",
                        delivery_mode=PERSISTENT,
                        message_id=e.id,
                        message_type=e.type,
                        timestamp=e.time,
                    ),
                    mandatory=False,
                )
                for e in envelopes
            )
        )

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self.started = False

    def ready(self) -> bool:
        return (
            self.started
            and self._connection is not None
            and not self._connection.is_closed
            and all(consumer.consuming() for consumer in self._consumers)
        )
