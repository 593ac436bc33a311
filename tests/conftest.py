"""Fixtures shared by every test: real backends, the fake Telegram, the running product."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import backends
from tests.support.fake_telegram import FakeTelegram, serve
from tests.support.product import Product, running


@pytest.fixture(scope="session")
def _servers() -> Iterator[backends.Servers]:
    with backends.servers() as servers:
        yield servers


@pytest.fixture(scope="session")
async def servers(_servers: backends.Servers) -> AsyncIterator[backends.Servers]:
    yield _servers
    await _servers.drop_all()


@pytest.fixture(scope="session")
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    server, task = await serve(fake)
    yield fake
    server.should_exit = True
    await task


@pytest.fixture(params=["embedded", "distributed"])
async def product(
    request: pytest.FixtureRequest, servers: backends.Servers, tmp_path: Path
) -> AsyncIterator[Product]:
    urls = await servers.fresh() if request.param == "distributed" else (None, None)
    async with running(
        request.param, tmp_path / "data", database_url=urls[0], amqp_url=urls[1]
    ) as running_product:
        yield running_product
