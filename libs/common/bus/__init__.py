"""The message bus: one small interface, two transports (RabbitMQ and in-process)."""

from libs.common.bus.base import Bus, Handler, Subscription, topic_matches
from libs.common.bus.memory import InMemoryBus
from libs.common.bus.rabbitmq import RabbitBus

__all__ = ["Bus", "Handler", "InMemoryBus", "RabbitBus", "Subscription", "topic_matches"]
