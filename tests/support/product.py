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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from libs.common.settings import SERVICES
from tests.support.fake_telegram import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)


@dataclass
class Product:
    mode: str
    ports: dict[str, int]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def ingest(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingest']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 60) -> None:
        names = SERVICES if self.mode == "distributed" else ("gateway", "ingest")
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            for name in names:
                url = f"http://127.0.0.1:{self.ports[name]}/readyz"
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"chatdesk exited early:\n{self.log()[-5000:]}")
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
) -> AsyncIterator[Product]:
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")} | {
        "CHATDESK_DATA_DIR": str(data_dir),
        "CHATDESK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CHATDESK_INTERNAL_TOKEN": secrets.token_urlsafe(16),
        "CHATDESK_BUS_RETRY_DELAY_S": "0.2",
        "CHATDESK_OUTBOX_POLL_S": "0.5",
        "CHATDESK_DELIVERY_BACKOFF_S": "0.1",
        "CHATDESK_LOG_FORMAT": "text",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **(extra_env or {}),
    }
    if mode == "distributed":
        assert database_url and amqp_url
        env |= {"DATABASE_URL": database_url, "AMQP_URL": amqp_url}
    log_path = data_dir / "chatdesk.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    product = Product(mode, ports, env, process, log_path)
    try:
        await product.wait_ready()
        yield product
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()


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

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.product.ports['gateway']}/api/ws?token={self.token}"
