"""The shape every chatdesk service has, and the runtime it is given.

A service is its database, its bus handlers, its HTTP app and its outbox relay. The launcher
(`services/launcher.py`) builds services from a `Runtime` and runs one of them per process in
distributed mode, or all of them in one process in embedded mode; the code paths are the same.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import FastAPI, Header, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import MetaData

from libs.common.blobs import BlobStore, open_blob_store
from libs.common.bus import Bus
from libs.common.db import Database
from libs.common.handlers import Consumers
from libs.common.outbox import OutboxRelay
from libs.common.settings import Settings

log = logging.getLogger(__name__)

INTERNAL_TOKEN_HEADER = "X-Chatdesk-Internal-Token"


class Runtime:
    """What a service gets from the process it runs in: settings, the bus, its peers."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        # Embedded mode has no peers in other processes, yet ingest's internal API shares the
        # public webhook port: a per-process random token still closes it.
        self.internal_token = (
            settings.internal_token.get_secret_value()
            if settings.internal_token
            else secrets.token_urlsafe(32)
        )
        self.local_apps: dict[str, FastAPI] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._blobs: BlobStore | None = None

    @property
    def blobs(self) -> BlobStore:
        """The file store, one per process: services that run together share it."""
        if self._blobs is None:
            self._blobs = open_blob_store(self.settings)
        return self._blobs

    def client(self, service: str) -> httpx.AsyncClient:
        """HTTP client for a peer's internal API: in-process when it runs here, else over TCP."""
        if service not in self._clients:
            headers = {INTERNAL_TOKEN_HEADER: self.internal_token}
            app = self.local_apps.get(service)
            if app is not None:
                transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
                base = f"http://{service}"
            else:
                transport = httpx.AsyncHTTPTransport(retries=2)
                base = self.settings.service_url(service)
            self._clients[service] = httpx.AsyncClient(
                base_url=base, headers=headers, transport=transport, timeout=10.0
            )
        return self._clients[service]

    def internal_auth(self) -> Callable[..., None]:
        expected = self.internal_token.encode()

        def check(
            token: Annotated[str | None, Header(alias=INTERNAL_TOKEN_HEADER)] = None,
        ) -> None:
            if token is None or not hmac.compare_digest(token.encode(), expected):
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "internal API: bad token")

        return check

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        if self._blobs is not None:
            await self._blobs.close()


@dataclass
class Service:
    name: str
    runtime: Runtime
    db: Database
    consumers: Consumers
    app: FastAPI
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def prepare(self) -> None:
        """Migrate, run start hooks and subscribe; call before the bus starts."""
        await self.db.migrate()
        for hook in self.on_start:
            await hook()
        self.consumers.attach(self.runtime.bus, self.db)

    def start_relay(self) -> None:
        settings = self.runtime.settings
        relay = OutboxRelay(
            self.db, self.runtime.bus, batch=settings.outbox_batch, poll_s=settings.outbox_poll_s
        )
        self._tasks.append(asyncio.create_task(relay.run(), name=f"{self.name}:outbox-relay"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.consumers.stop()
        for hook in self.on_stop:
            await hook()
        await self.db.dispose()


def new_database(runtime: Runtime, name: str, metadata: MetaData, package_dir: Path) -> Database:
    return Database(runtime.settings, name, metadata, package_dir / "migrations")


def new_app(
    name: str,
    runtime: Runtime,
    db_ready: Callable[[], Awaitable[bool]],
    *,
    api_prefix: str | None = None,
) -> FastAPI:
    """A FastAPI app with the health endpoints every service has.

    Only a public API (`api_prefix`) publishes its OpenAPI schema and docs.
    """
    app = FastAPI(
        title=f"chatdesk {name}",
        openapi_url=f"{api_prefix}/openapi.json" if api_prefix else None,
        docs_url=f"{api_prefix}/docs" if api_prefix else None,
        redoc_url=None,
        # No OpenTelemetry here: FastAPI's native telemetry would still look up the global
        # providers on every request, which measured ~8% of a webhook's CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's answer, minus each error's `input`: that would echo the tokens, secrets and
        # passwords of a refused request back into a response.
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse(
            {"detail": jsonable_encoder(errors)}, status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = {"database": await db_ready(), "bus": runtime.bus.ready()}
        code = status.HTTP_200_OK if all(checks.values()) else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"service": name, "ready": all(checks.values()), **checks}, code)

    return app
