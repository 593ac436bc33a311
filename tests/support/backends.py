"""Real PostgreSQL and RabbitMQ for tests: a fresh database and vhost for every product started.

Server URLs come from the environment first (`DATABASE_URL`, `AMQP_URL`, as `.ci/run` and
`make test` set them); without them, testcontainers starts both in Docker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx


@dataclass
class Servers:
    postgres: str  # e.g. postgresql://postgres@127.0.0.1:5432/postgres
    rabbitmq: str  # e.g. amqp://guest:guest@127.0.0.1:5672/
    databases: list[str] = field(default_factory=list)
    vhosts: list[str] = field(default_factory=list)

    async def fresh(self) -> tuple[str, str]:
        """A new empty database and vhost; their URLs."""
        return await self.fresh_database(), self.fresh_vhost()

    async def fresh_database(self) -> str:
        """A new empty database; its URL."""
        name = _name()
        conn = await asyncpg.connect(self.postgres)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.databases.append(name)
        return _with_path(self.postgres, name)

    def fresh_vhost(self) -> str:
        """A new empty vhost; its URL. Each costs about 1.5 s on this machine (two `rabbitmqctl`
        calls, each an Erlang VM start): tests that need only a database take `fresh_database`."""
        name = _name()
        _vhost(self.rabbitmq, "add", name)
        self.vhosts.append(name)
        return _with_path(self.rabbitmq, quote(name, safe=""))

    async def drop_all(self) -> None:
        if self.databases:
            conn = await asyncpg.connect(self.postgres)
            try:
                for database in self.databases:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()
        for vhost in self.vhosts:
            _vhost(self.rabbitmq, "delete", vhost)
        self.databases.clear()
        self.vhosts.clear()


def _name() -> str:
    return f"chatdesk_test_{uuid.uuid4().hex[:12]}"


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{path}"))


def _vhost(amqp_url: str, action: str, name: str) -> None:
    """Create or delete a vhost: rabbitmqctl on this machine, else the management API."""
    parts = urlsplit(amqp_url)
    if shutil.which("rabbitmqctl") and parts.hostname in ("127.0.0.1", "localhost"):
        command = "add_vhost" if action == "add" else "delete_vhost"
        subprocess.run(["rabbitmqctl", "-q", command, name], check=True, capture_output=True)
        if action == "add":
            user = parts.username or "guest"
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", name, user, ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )
        return
    api = os.environ.get("RABBITMQ_MANAGEMENT_URL", f"http://{parts.hostname}:15672")
    auth = (parts.username or "guest", parts.password or "guest")
    method = "PUT" if action == "add" else "DELETE"
    httpx.request(method, f"{api}/api/vhosts/{quote(name, safe='')}", auth=auth).raise_for_status()
    if action == "add":
        httpx.put(
            f"{api}/api/permissions/{quote(name, safe='')}/{auth[0]}",
            auth=auth,
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    postgres, rabbitmq = os.environ.get("DATABASE_URL"), os.environ.get("AMQP_URL")
    if postgres and rabbitmq:
        yield Servers(postgres, rabbitmq)
        return
    # A developer with Docker and no local servers: start both (pinned images).
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        PostgresContainer("postgres:15-alpine", driver=None) as pg,
        RabbitMqContainer("rabbitmq:3.13-management-alpine") as mq,
    ):
        host, port = mq.get_container_host_ip(), mq.get_exposed_port(5672)
        os.environ["RABBITMQ_MANAGEMENT_URL"] = f"http://{host}:{mq.get_exposed_port(15672)}"
        yield Servers(pg.get_connection_url(), f"amqp://guest:guest@{host}:{port}/")
