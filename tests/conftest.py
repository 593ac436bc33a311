"""Fixtures shared by every test: real backends, the fake platforms, the running product."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import backends
from tests.support.fake_facebook import FakeFacebook
from tests.support.fake_facebook import serve as serve_graph
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


@pytest.fixture(scope="module")
async def postgres_url(servers: backends.Servers) -> str:
    """A fresh PostgreSQL database for a module's tests of one service's tables."""
    return await servers.fresh_database()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    server, task = await serve(fake)
    yield fake
    server.should_exit = True
    await task


@pytest.fixture
async def fake_facebook() -> AsyncIterator[FakeFacebook]:
    fake = FakeFacebook()
    server, task = await serve_graph(fake)
    yield fake
    server.should_exit = True
    await task


@pytest.fixture(scope="session", params=["embedded", "distributed"])
async def product(
    request: pytest.FixtureRequest,
    servers: backends.Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Product]:
    """The product in each mode, shared by the tests: each test sets up its own desk in it."""
    urls = await servers.fresh() if request.param == "distributed" else (None, None)
    data_dir = tmp_path_factory.mktemp(request.param)
    async with running(
        request.param, data_dir, database_url=urls[0], amqp_url=urls[1]
    ) as running_product:
        yield running_product
