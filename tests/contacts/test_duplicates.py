"""The duplicate search on a real database (PostgreSQL and SQLite): the default rules on
realistic names, phones, e-mails and accounts; rules as data; the result stored per chat and
published, naming the agent who holds the chat."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import ChatOffered, ChatOpened
from services.contacts import duplicates, rules
from services.contacts.models import DuplicateSearch
from services.contacts.rules import Condition, RuleIn, RulePatch
from tests.contacts.conftest import emitted, new_contact


def opened(contact_id: str) -> ChatOpened:
    return ChatOpened(
        chat_id=new_id(),
        contact_id=contact_id,
        channel_id="channel-1",
        queue_id="queue-1",
        platform="telegram",
        opened_at=utcnow(),
    )


def offered(chat: ChatOpened, agent_id: str) -> ChatOffered:
    return ChatOffered(
        chat_id=chat.chat_id,
        queue_id=chat.queue_id,
        agent_id=agent_id,
        contact_id=chat.contact_id,
        offered_at=utcnow() + timedelta(seconds=1),
    )


async def found(db: Database, contact_id: str) -> dict[str, str]:
    """Search as a new chat of the contact does: {candidate id: rule name}."""
    chat = opened(contact_id)
    async with driver_transaction(db) as tx:  # as contacts' consumer does
        await duplicates.search_for_chats(tx, [chat])
    async with db.sessions() as session:
        row = await session.get(DuplicateSearch, chat.chat_id)
    assert row is not None and row.searched_at is not None
    assert row.count == len(row.candidates)
    return {c["contact_id"]: c["rule_name"] for c in row.candidates}


async def test_similar_names_across_scripts_order_initials_and_accents(db: Database) -> None:
    ivan = await new_contact(db, "Ivan Petrov")
    same = {
        await new_contact(db, "Иван Петров"),
        await new_contact(db, "Petrov Ivan"),
        await new_contact(db, "I. Petrov"),
        await new_contact(db, "Иван Иванович Петров"),
    }
    maria = await new_contact(db, "Maria Garcia")
    maria_accented = await new_contact(db, "María García")
    for other in ("Pavel Petrov", "Ivan Ivanov", "Petr Ivanov", "Anna Petrova", "Ivan"):
        await new_contact(db, other)
    for other in ("Mario Rossi", "José García", "Maria"):
        await new_contact(db, other)

    assert await found(db, ivan) == dict.fromkeys(same, "Similar name")
    assert await found(db, maria_accented) == {maria: "Similar name"}


async def test_phones_emails_and_accounts(db: Database) -> None:
    first = await new_contact(
        db, "Olga Smirnova", phones=["+7 916 123-45-67"], emails=["Olga@Example.com"]
    )
    by_phone = await new_contact(db, "Telegram user 4411", phones=["+79161234567"])
    by_email = await new_contact(db, "o.s.", emails=["olga@example.com"])
    await new_contact(db, "Kirill Orlov", phones=["+7 916 123-45-68"])  # a colleague
    assert await found(db, first) == {by_phone: "Same phone", by_email: "Same e-mail"}

    # Names too far apart alone (83 of 100), but at one company.
    ivan = await new_contact(db, "Ivan Petrov", account="ACME Corp")
    colleague = await new_contact(db, "Ivana Petrova", account="acme  corp")
    await new_contact(db, "Ivana Petrova")  # the same name at no company: not enough
    assert await found(db, ivan) == {colleague: "Similar name and same account"}


async def test_rules_are_data(db: Database) -> None:
    ivan = await new_contact(db, "Ivan Petrov")
    typo = await new_contact(db, "Ivan Petrob")
    assert await found(db, ivan) == {typo: "Similar name"}

    async with db.transaction() as session:
        [similar] = [r for r in await rules.list_rules(session) if r.name == "Similar name"]
        await rules.update_rule(session, similar.id, RulePatch(active=False), "supervisor-1")
    assert await found(db, ivan) == {}

    async with db.transaction() as session:
        await rules.create_rule(
            session,
            RuleIn(
                name="Nearly the same name",
                conditions=[Condition(field="name", match="similar", threshold=95)],
            ),
            "supervisor-1",
        )
        await rules.update_rule(session, similar.id, RulePatch(active=True), "supervisor-1")
    # Each candidate is shown with the rule that scores it best.
    twin = await new_contact(db, "Petrov Ivan")
    assert await found(db, ivan) == {twin: "Nearly the same name", typo: "Similar name"}


async def test_the_result_reaches_whoever_holds_the_chat(db: Database) -> None:
    ivan = await new_contact(db, "Ivan Petrov")
    twin = await new_contact(db, "Иван Петров")

    # Searched before the offer: published without an agent, then again naming the agent.
    chat = opened(ivan)
    async with driver_transaction(db) as tx:  # as contacts' consumer does
        await duplicates.search_for_chats(tx, [chat])
    async with driver_transaction(db) as tx:
        await duplicates.search_for_chats(tx, [offered(chat, "agent-1")])
    published = await emitted(db, "contact.duplicates_found")
    assert [(e["chat_id"], e["agent_id"], e["count"]) for e in published] == [
        (chat.chat_id, None, 1),
        (chat.chat_id, "agent-1", 1),
    ]
    [candidate] = published[-1]["candidates"]
    assert candidate["contact_id"] == twin and candidate["name"] == "Иван Петров"
    assert candidate["score"] == 100 and candidate["rule_name"] == "Similar name"

    # Offered before the search (another replica was quicker): the search names the agent.
    later = opened(twin)
    async with driver_transaction(db) as tx:
        await duplicates.search_for_chats(tx, [offered(later, "agent-2"), later])
    last = (await emitted(db, "contact.duplicates_found"))[-1]
    assert (last["chat_id"], last["agent_id"], last["count"]) == (later.chat_id, "agent-2", 1)

    # A redelivered chat.opened (a new event id) searches nothing again.
    async with driver_transaction(db) as tx:
        await duplicates.search_for_chats(tx, [later])
    assert len(await emitted(db, "contact.duplicates_found")) == 3

    async with db.sessions() as session:
        rows = list(await session.scalars(select(DuplicateSearch)))
    assert {r.chat_id: r.agent_id for r in rows} == {
        chat.chat_id: "agent-1",
        later.chat_id: "agent-2",
    }


async def test_a_batch_searches_each_chat_as_alone(db: Database) -> None:
    ivan = await new_contact(db, "Ivan Petrov")
    twin = await new_contact(db, "Иван Петров")
    maria = await new_contact(db, "Maria Garcia")
    maria_accented = await new_contact(db, "María García")
    olga = await new_contact(db, "Olga Smirnova", phones=["+7 916 123-45-67"])
    by_phone = await new_contact(db, "Telegram user 4411", phones=["+79161234567"])
    alone = await new_contact(db, "Zebulon Quixote")
    chats = [opened(c) for c in (ivan, maria_accented, olga, alone)]
    first, second = chats[0], chats[1]
    # One batch: offers before and after their chat's search, and a chat.opened redelivered.
    batch = [offered(second, "agent-2"), *chats, offered(first, "agent-1"), first]
    async with driver_transaction(db) as tx:
        await duplicates.search_for_chats(tx, batch)
    async with db.sessions() as session:
        rows = {r.chat_id: r for r in await session.scalars(select(DuplicateSearch))}
    assert {c: {x["contact_id"] for x in rows[c.chat_id].candidates} for c in chats} == {
        chats[0]: {twin},
        chats[1]: {maria},
        chats[2]: {by_phone},
        chats[3]: set(),
    }
    assert {c: rows[c.chat_id].agent_id for c in chats} == {
        chats[0]: "agent-1",
        chats[1]: "agent-2",
        chats[2]: None,
        chats[3]: None,
    }
    published = await emitted(db, "contact.duplicates_found")
    # One result per chat, as the batch left it: the first chat's names its offer's agent.
    assert [(e["chat_id"], e["agent_id"], e["count"]) for e in published] == [
        (first.chat_id, "agent-1", 1),
        (second.chat_id, "agent-2", 1),
        (chats[2].chat_id, None, 1),
        (chats[3].chat_id, None, 0),
    ]
    assert published[1]["candidates"][0]["name"] == "Maria Garcia"
    # Each as alone: the same candidates.
    for chat in chats:
        assert set(await found(db, chat.contact_id)) == {
            x["contact_id"] for x in rows[chat.chat_id].candidates
        }
