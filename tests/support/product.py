"""chatdesk as a user runs it: `python -m services` in child processes, driven over HTTP.

`embedded`: one process, SQLite files, in-process bus. `distributed`: one process per service
(the launcher's supervisor), on a fresh PostgreSQL database and RabbitMQ vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from libs.common.settings import SERVICES
from tests.support.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)


@dataclass
class Product:
    """The running product: one process (embedded) or one per service (distributed)."""

    mode: str
    ports: dict[str, int]
    env: dict[str, str]
    data_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Units started by `add_replica`: unit name -> the service it runs.
    replicas: dict[str, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def ingest(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingest']}"

    @property
    def units(self) -> tuple[str, ...]:
        return (*(SERVICES if self.mode == "distributed" else ("all",)), *self.replicas)

    def url(self, unit: str) -> str:
        return f"http://127.0.0.1:{self.ports[unit]}"

    def log(self) -> str:
        return "".join(
            (self.data_dir / f"{unit}.log").read_text(errors="replace") for unit in self.units
        )

    def start(self, unit: str) -> None:
        """Start one unit: a service's process, a replica's, or `all` in embedded mode."""
        service = self.replicas.get(unit, unit)
        args = [] if service == "all" else [service]
        env = self.env
        if unit in self.replicas:  # its own HTTP port; the others still call the first replica
            env = env | {f"{service.upper()}_PORT": str(self.ports[unit])}
        with (self.data_dir / f"{unit}.log").open("ab") as log:
            self.processes[unit] = subprocess.Popen(
                [sys.executable, "-m", "services", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def add_replica(self, service: str, unit: str) -> None:
        """Start one more process of `service` (distributed mode), as `unit`, and wait until it
        is ready. It shares the database and the vhost: it consumes the same queues as one
        consumer group with the first, and runs the same background work (relays, clocks)."""
        assert self.mode == "distributed" and service in SERVICES and unit not in self.ports
        self.ports[unit] = free_port()
        self.replicas[unit] = service
        self.start(unit)
        await self.wait_ready((unit,))

    @contextlib.asynccontextmanager
    async def replica(self, service: str) -> AsyncIterator[str]:
        """`add_replica` for one test of a shared product, stopped after it: its base URL."""
        unit = f"{service}-replica"
        await self.add_replica(service, unit)
        try:
            yield self.url(unit)
        finally:
            process = self.processes.pop(unit)
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
            del self.ports[unit], self.replicas[unit]

    async def restart(self, unit: str) -> None:
        """Stop a unit cleanly (SIGTERM, as a deploy does), start it again, wait until ready."""
        process = self.processes.pop(unit)
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        self.start(unit)
        await self.wait_ready(("gateway", "ingest") if unit == "all" else (unit,))

    def kill(self, unit: str) -> None:
        """Crash a unit: SIGKILL, no chance to finish or ack anything."""
        process = self.processes.pop(unit)
        process.kill()
        process.wait()

    async def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    async def wait_ready(self, names: tuple[str, ...] | None = None, timeout: float = 120) -> None:
        if names is None:
            names = SERVICES if self.mode == "distributed" else ("gateway", "ingest")
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            for name in names:
                url = f"http://127.0.0.1:{self.ports[name]}/readyz"
                while True:
                    exited = [u for u, p in self.processes.items() if p.poll() is not None]
                    if exited:
                        raise RuntimeError(f"{exited} exited early:\n{self.log()[-5000:]}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not ready:\n{self.log()[-5000:]}")
                    await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    mode: str,
    data_dir: Path,
    *,
    database_url: str | None = None,
    amqp_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    webhooks: bool = True,
) -> AsyncIterator[Product]:
    """The product, started; with `webhooks`, Telegram channels register their webhook (at
    ingest's local URL, which the fake Bot API takes), else ingest long-polls them."""
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")} | {
        "CHATDESK_DATA_DIR": str(data_dir),
        "CHATDESK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CHATDESK_INTERNAL_TOKEN": secrets.token_urlsafe(16),
        "CHATDESK_BUS_RETRY_DELAY_S": "0.2",
        "CHATDESK_OUTBOX_POLL_S": "0.5",
        "CHATDESK_DELIVERY_BACKOFF_S": "0.1",
        # Small, so that the size limits are tested without moving megabytes around.
        "CHATDESK_MAX_FILE_MB": "1",
        "CHATDESK_LOG_FORMAT": "text",
        # A test session runs several products at once (up to seven processes each) on one
        # PostgreSQL, which takes 100 connections: each process keeps at most 6.
        "CHATDESK_DB_POOL_SIZE": "6",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **({"CHATDESK_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['ingest']}"} if webhooks else {}),
        **(extra_env or {}),
    }
    if mode == "distributed":
        assert database_url and amqp_url
        env |= {"DATABASE_URL": database_url, "AMQP_URL": amqp_url}
    data_dir.mkdir(parents=True, exist_ok=True)
    product = Product(mode, ports, env, data_dir)
    try:
        for unit in product.units:
            product.start(unit)
        await product.wait_ready()
        yield product
    finally:
        await product.stop()


class Console:
    """What the agent console does, over the public API."""

    def __init__(self, product: Product, token: str, me: dict[str, Any]) -> None:
        self.product = product
        self.me = me
        self.http = httpx.AsyncClient(
            base_url=product.gateway, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )
        self.token = token

    @classmethod
    async def login(cls, product: Product, username: str, password: str) -> Console:
        async with httpx.AsyncClient(base_url=product.gateway) as client:
            response = await client.post(
                "/api/auth/login", json={"username": username, "password": password}
            )
        response.raise_for_status()
        body = response.json()
        return cls(product, body["access_token"], body["agent"])

    async def close(self) -> None:
        await self.http.aclose()

    async def list_chats(self, view: str) -> list[dict[str, Any]]:
        chats: list[dict[str, Any]] = (
            await self.http.get("/api/chats", params={"view": view})
        ).json()
        return chats

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (
            await self.http.get(f"/api/chats/{chat_id}/messages")
        ).json()
        return messages

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.product.ports['gateway']}/api/ws?token={self.token}"
