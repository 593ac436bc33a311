"""Structured logs: one JSON object a line, with the event, chat and consumer in context.

Secrets stay out: access-log lines have `token=` query values masked, and the loggers of the
platform clients (whose URLs embed bot tokens) are kept at WARNING.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_context", default=None
)

_SECRET_QUERY = re.compile(r"((?:token|secret|password)=)[^&\s\"]+", re.IGNORECASE)
_BOT_TOKEN = re.compile(r"/bot\d+:[\w-]+")


def redact(text: str) -> str:
    return _BOT_TOKEN.sub("/bot<redacted>", _SECRET_QUERY.sub(r"\1<redacted>", text))


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    token = _context.set(
        {**(_context.get() or {}), **{k: v for k, v in values.items() if v is not None}}
    )
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **(_context.get() or {}),
        }
        for key, value in record.__dict__.items():
            if key not in self._standard:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in (_context.get() or {}).items())
        return redact(super().format(record) + (f" [{context}]" if context else ""))


def setup_logging(level: str = "INFO", fmt: str = "json", service: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiogram", "aiohttp", "aiormq", "aio_pika", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if service:
        _context.set({"service": service})
