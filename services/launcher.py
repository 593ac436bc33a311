"""Starting chatdesk: `python -m services [SERVICE ...]` (see README, "Running").

- no argument, embedded (no `AMQP_URL`): every service in this process, in-process bus.
- no argument, with `AMQP_URL`: one child process per service (what `make run` does).
- `SERVICE ...`: those services in this process (what a container runs).

A process serves HTTP for the services it runs; when gateway and ingest share a process with the
others, those others are reached in-process and need no port of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

import uvicorn
import uvloop

from libs.common.bus import Bus, InMemoryBus, RabbitBus
from libs.common.logs import setup_logging
from libs.common.service import Runtime, Service
from libs.common.settings import SERVICES, Settings

PUBLIC = ("gateway", "ingest")
# An idle keep-alive connection is closed well after its clients give up on it themselves
# (httpx after 5 s, browsers and proxies later), never at the moment a client sends on it
# (which it would see as "Server disconnected without sending a response"). uvicorn: 5 s.
KEEP_ALIVE_S = 75
# The collector's thresholds once started (generation 0 allocations, then 1 and 2 passes).
GC_THRESHOLDS = (20_000, 50, 100)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the launcher.

    uvicorn re-raises the signal that stopped it once it has shut down, which kills the process
    before the services stop (their relays, consumers, Telegram links releasing their channels).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_bus(settings: Settings, names: list[str]) -> Bus:
    if settings.amqp_url is not None:
        return RabbitBus(
            settings.amqp_url.get_secret_value(),
            exchange=settings.exchange,
            max_attempts=settings.bus_max_attempts,
            retry_delay_s=settings.bus_retry_delay_s,
            prefetch=settings.bus_prefetch,
        )
    if set(names) != set(SERVICES):
        raise SystemExit("AMQP_URL is required to run services in separate processes")
    return InMemoryBus(
        max_attempts=settings.bus_max_attempts, retry_delay_s=settings.bus_retry_delay_s
    )


def build(name: str, runtime: Runtime) -> Service:
    """Import only the services this process runs: ingest's platform libraries alone take
    seconds of CPU to import, which five other processes need not pay."""
    builder: Callable[[Runtime], Service] = importlib.import_module(f"services.{name}.app").build
    return builder(runtime)


async def run_in_process(settings: Settings, names: list[str]) -> None:
    runtime = Runtime(settings, make_bus(settings, names))
    services = [build(name, runtime) for name in names]
    runtime.local_apps = {s.name: s.app for s in services}
    # All in one process: only the public apps need ports. Otherwise every service needs its own.
    everything = len(services) == len(SERVICES)
    served = [s for s in services if s.name in PUBLIC or not everything]
    try:
        for service in services:
            await service.prepare()
        await runtime.bus.start()
        for service in services:
            service.start_relay()
        # What the start built (modules, apps, compiled statements, pydantic's validators) lives
        # as long as the process: frozen, the collector's full passes stop walking it again.
        gc.collect()
        gc.freeze()
        # Every message allocates thousands of short-lived objects (frames, models, rows): with
        # the default threshold of 700 the young generation was collected hundreds of times a
        # second. Rarer collections cost the same memory a few batches' worth.
        gc.set_threshold(*GC_THRESHOLDS)
        servers = [
            _Server(
                uvicorn.Config(
                    s.app,
                    host=settings.host,
                    port=settings.port(s.name),
                    log_config=None,
                    lifespan="off",
                    ws_ping_interval=20,
                    timeout_keep_alive=KEEP_ALIVE_S,
                )
            )
            for s in served
        ]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, functools.partial(_stop_serving, servers))
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        await runtime.bus.stop()
        for service in services:
            await service.stop()
        await runtime.close()


def _stop_serving(servers: Sequence[uvicorn.Server]) -> None:
    for server in servers:
        server.should_exit = True


async def supervise() -> int:
    """One child process per service; when one exits, stop the others and fail."""
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "services", name)
        for name in SERVICES
    ]

    def stop_all(*_: object) -> None:
        for child in children:
            if child.returncode is None:
                child.terminate()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    waits = [asyncio.ensure_future(c.wait()) for c in children]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stop_all()
    codes = await asyncio.gather(*waits)
    return max(abs(c) for c in codes if c is not None) if any(codes) else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("services", nargs="*", choices=[*SERVICES, []], metavar="SERVICE")
    args = parser.parse_args()
    settings = Settings()
    names = args.services or list(SERVICES)
    setup_logging(settings.log_level, settings.log_format, "+".join(args.services) or "chatdesk")
    uvloop.install()  # a faster event loop: every hop of a message is Python I/O
    with contextlib.suppress(KeyboardInterrupt):
        if not args.services and settings.amqp_url is not None:
            sys.exit(asyncio.run(supervise()))
        asyncio.run(run_in_process(settings, names))
    # The services have stopped. Spare the interpreter's exit a last collection of the whole
    # heap, which takes seconds on a busy machine and frees nothing the OS would not.
    gc.freeze()
