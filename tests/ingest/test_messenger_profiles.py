"""Senders' names from the User Profile API (the fake Graph API over HTTP), asked once per
customer, and a readable name whenever Meta has none to give."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from libs.common.events import Sender
from services.ingest.meta.graph import Graph
from services.ingest.meta.profiles import Profiles
from services.ingest.models import Channel
from tests.support.fake_facebook import SERVER_ERROR, TOKEN_EXPIRED, FakeFacebook

PAGE, TOKEN, SECRET = "104512345678901", "EAAB-page-token", "0123456789abcdef0123456789abcdef"
PSID = "7012345678901234"


@pytest.fixture
async def graph() -> AsyncIterator[Graph]:
    client = Graph()
    yield client
    await client.close()


@pytest.fixture
def channel(fake_facebook: FakeFacebook) -> Channel:
    fake_facebook.add_page(TOKEN, PAGE, "Support page", SECRET)
    return Channel(
        id="3f0a2b1c-9d8e-4f7a-8b6c-5d4e3f2a1b0c",
        kind="facebook",
        api_base=fake_facebook.api_base,
        external_id=PAGE,
        token=TOKEN,
        secret=SECRET,
    )


class Flags:
    def __init__(self) -> None:
        self.flagged: list[str] = []

    async def __call__(self, channel: Channel) -> None:
        self.flagged.append(channel.id)


def profile_calls(fake: FakeFacebook) -> int:
    return len([c for c in fake.calls if c.path == f"/v25.0/{PSID}"])


async def test_a_profile_is_asked_once_and_names_the_sender(
    fake_facebook: FakeFacebook, graph: Graph, channel: Channel
) -> None:
    fake_facebook.profiles[PSID] = {
        "first_name": "Peter",
        "last_name": "Chang",
        "profile_pic": "https://platform-lookaside.fbsbx.com/platform/profilepic/?psid=7012",
    }
    profiles = Profiles(graph, Flags())

    senders = await asyncio.gather(*(profiles.sender(channel, PSID) for _ in range(5)))
    again = await profiles.sender(channel, PSID)

    assert set(senders) == {again} == {Sender(first_name="Peter", last_name="Chang")}
    assert profile_calls(fake_facebook) == 1
    [call] = [c for c in fake_facebook.calls if c.path == f"/v25.0/{PSID}"]
    assert call.params["fields"] == "first_name,last_name,profile_pic"
    assert call.params["access_token"] == TOKEN
    profile = await profiles.profile(channel, PSID)
    assert profile is not None and profile.profile_pic is not None  # for whoever keeps pictures


async def test_no_profile_gives_a_readable_name_and_is_not_asked_again_soon(
    fake_facebook: FakeFacebook, graph: Graph, channel: Channel
) -> None:
    profiles = Profiles(graph, Flags())  # the fake has no profile: Meta's 100/2018218

    assert (await profiles.sender(channel, PSID)).display_name == "Facebook user 1234"
    assert (await profiles.sender(channel, PSID)).display_name == "Facebook user 1234"
    assert profile_calls(fake_facebook) == 1


async def test_an_outage_is_asked_again_after_a_short_while(
    fake_facebook: FakeFacebook, graph: Graph, channel: Channel
) -> None:
    fake_facebook.profiles[PSID] = {"first_name": "Peter"}
    fake_facebook.errors["profile"] = [SERVER_ERROR]
    profiles = Profiles(graph, Flags(), failed_ttl_s=0.01)

    assert (await profiles.sender(channel, PSID)).display_name == "Facebook user 1234"
    await asyncio.sleep(0.02)
    assert (await profiles.sender(channel, PSID)).display_name == "Peter"


async def test_an_unreachable_graph_api_does_not_fail_the_webhook(graph: Graph) -> None:
    channel = Channel(id="c", api_base="http://127.0.0.1:9/v25.0", token=TOKEN, secret=SECRET)
    profiles = Profiles(graph, Flags(), timeout_s=1)

    assert (await profiles.sender(channel, PSID)).display_name == "Facebook user 1234"


async def test_a_dead_token_flags_the_channel(
    fake_facebook: FakeFacebook, graph: Graph, channel: Channel
) -> None:
    fake_facebook.errors["profile"] = [TOKEN_EXPIRED]
    flags = Flags()

    sender = await Profiles(graph, flags).sender(channel, PSID)

    assert sender.display_name == "Facebook user 1234"
    assert flags.flagged == [channel.id]
