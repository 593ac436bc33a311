"""The duplicate search: which contacts may be the same person as this one, under the active
rules. It runs for every new chat (off the message path: on `chat.opened`, in its own consumer
group), its result is stored per chat and published as `contact.duplicates_found`.

Candidates come from indexes, never from a scan of all contacts:
- names: the `name_words` index holds every word of every live contact's name key. A search
  looks up each word of the searched name spelled every way one edit away (~400 spellings of a
  word, one B-tree probe each) and keeps the contacts that share at least two words that way
  (one, when either name has a single full word, as "I. Petrov" has); one-word names are
  compared with one-word names only, as the score of a one-word name against a longer one
  stays below the lowest threshold a rule may have.
- phones and e-mails: equality on `contact_points`.
Then every rule is scored on every candidate in Python (rapidfuzz, `names.name_score`). See
decision 16 in docs/architecture.md and `make bench-duplicates` for why and how fast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Integer, String, Table, bindparam, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import insert_ignore
from libs.common.envelope import utcnow
from libs.common.events import ChatOffered, ChatOpened, DuplicateCandidate, DuplicatesFound
from libs.common.outbox import emit
from services.contacts.models import Contact, ContactOut, ContactPoint, DuplicateSearch, NameWord
from services.contacts.names import indexed_words, near_spellings
from services.contacts.rules import Profile, Rule, active_rules
from services.contacts.service import contacts_out, points_of

CONTACTS = cast(Table, Contact.__table__)
POINTS = cast(Table, ContactPoint.__table__)
NAME_WORDS = cast(Table, NameWord.__table__)
SEARCHES = cast(Table, DuplicateSearch.__table__)

KEEP = 50  # candidates kept and published per search, best first; `count` counts them all
NAME_CANDIDATES = 1000  # at most this many contacts looked at for a name (a very common one)


@dataclass(frozen=True)
class Match:
    contact_id: str
    score: float
    rule: Rule


def _profile(row: Any) -> Profile:
    return Profile(row.id, row.name_key, frozenset(), frozenset(), row.account_key)


async def profiles(session: AsyncSession, ids: Sequence[str]) -> dict[str, Profile]:
    """What the rules compare, for these live contacts."""
    if not ids:
        return {}
    rows = (
        await session.execute(
            select(CONTACTS.c.id, CONTACTS.c.name_key, CONTACTS.c.account_key).where(
                CONTACTS.c.id.in_(ids), CONTACTS.c.merged_into.is_(None)
            )
        )
    ).all()
    points = await points_of(session, [r.id for r in rows])
    return {
        r.id: replace(
            _profile(r),
            phones=frozenset(points[r.id]["phone"]),
            emails=frozenset(points[r.id]["email"]),
        )
        for r in rows
    }


async def by_name(session: AsyncSession, key: str) -> dict[str, Profile]:
    """Contacts whose name shares enough words with `key`, each within one edit, as profiles
    without phones or e-mails (one statement on PostgreSQL)."""
    full = indexed_words(key)
    if not full:
        return {}  # initials only: nothing a name can be looked up by
    spellings: dict[str, set[int]] = defaultdict(set)
    for i, word in enumerate(full):
        for spelling in near_spellings(word):
            spellings[spelling].add(i)
    one_word = len(key.split()) == 1
    words_match = NAME_WORDS.c.words == 1 if one_word else NAME_WORDS.c.words >= 2
    live = (CONTACTS.c.id, CONTACTS.c.name_key, CONTACTS.c.account_key)
    if session.get_bind().dialect.name == "postgresql":
        # Grouped in the database: the rows of common words stay there.
        keys = [(s, i) for s, indexes in spellings.items() for i in indexes]
        lookup = (
            func.unnest(
                bindparam("spellings", [s for s, _ in keys], type_=ARRAY(String)),
                bindparam("word_index", [i for _, i in keys], type_=ARRAY(Integer)),
            )
            .table_valued("spelling", "word_index")
            .render_derived(with_types=False)
        )
        matched = func.count(lookup.c.word_index.distinct())
        needed = func.least(2, len(full), func.max(NAME_WORDS.c.full_words))
        found = (
            select(NAME_WORDS.c.contact_id, matched.label("matched"))
            .join(lookup, NAME_WORDS.c.word == lookup.c.spelling)
            .where(words_match)
            .group_by(NAME_WORDS.c.contact_id)
            .having(matched >= needed)
            .order_by(matched.desc())
            .limit(NAME_CANDIDATES)
            .subquery()
        )
        rows = await session.execute(
            select(*live)
            .join(found, found.c.contact_id == CONTACTS.c.id)
            .where(CONTACTS.c.merged_into.is_(None))
        )
        return {row.id: _profile(row) for row in rows}
    # SQLite (embedded mode, small data): the same lookup, grouped here.
    hits: dict[str, set[int]] = defaultdict(set)
    full_words: dict[str, int] = {}
    for word, contact_id, count in await session.execute(
        select(NAME_WORDS.c.word, NAME_WORDS.c.contact_id, NAME_WORDS.c.full_words).where(
            NAME_WORDS.c.word.in_(list(spellings)), words_match
        )
    ):
        hits[contact_id] |= spellings[word]
        full_words[contact_id] = count
    ids = [c for c, h in hits.items() if len(h) >= min(2, len(full), full_words[c])]
    ids.sort(key=lambda c: -len(hits[c]))
    rows = await session.execute(
        select(*live).where(
            CONTACTS.c.id.in_(ids[:NAME_CANDIDATES]), CONTACTS.c.merged_into.is_(None)
        )
    )
    return {row.id: _profile(row) for row in rows}


async def name_candidates(session: AsyncSession, key: str) -> list[str]:
    return list(await by_name(session, key))


async def by_points(
    session: AsyncSession, me: Profile, kinds: set[str]
) -> dict[str, dict[str, set[str]]]:
    """Contacts with a phone or e-mail in common with `me`: {id: {kind: shared values}}."""
    wanted = [("phone", v) for v in me.phones if "phone" in kinds]
    wanted += [("email", v) for v in me.emails if "email" in kinds]
    shared: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"phone": set(), "email": set()})
    if wanted:
        for contact_id, kind, value in await session.execute(
            select(POINTS.c.contact_id, POINTS.c.kind, POINTS.c.value).where(
                tuple_(POINTS.c.kind, POINTS.c.value).in_(wanted)
            )
        ):
            shared[contact_id][kind].add(value)
    return shared


async def search(session: AsyncSession, me: Profile, rules: Sequence[Rule]) -> list[Match]:
    """Every live contact that some rule matches with `me`, best first.

    A candidate's phones and e-mails are known only where it shares them with `me`, which is
    all the rules ask of them.
    """
    found = await by_name(session, me.name_key) if any(r.uses("name") for r in rules) else {}
    shared = await by_points(
        session, me, {f for f in ("phone", "email") if any(r.uses(f) for r in rules)}
    )
    if missing := [c for c in shared if c not in found]:
        found.update(await profiles(session, missing))
    found.pop(me.id, None)
    matches = []
    for other in found.values():
        if other.id in shared:
            other = replace(
                other,
                phones=frozenset(shared[other.id]["phone"]),
                emails=frozenset(shared[other.id]["email"]),
            )
        best: Match | None = None
        for rule in rules:
            score = rule.score(me, other)
            if score is not None and (best is None or score > best.score):
                best = Match(other.id, score, rule)
        if best is not None:
            matches.append(best)
    matches.sort(key=lambda m: (-m.score, m.contact_id))
    return matches


async def _locked_search(session: AsyncSession, chat_id: str) -> DuplicateSearch:
    row = await session.get(DuplicateSearch, chat_id, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


async def _live_id(session: AsyncSession, contact_id: str) -> str:
    """The contact, or the survivor it was merged into."""
    survivor = await session.scalar(
        select(CONTACTS.c.merged_into).where(CONTACTS.c.id == contact_id)
    )
    return survivor or contact_id


async def _announce(session: AsyncSession, row: DuplicateSearch) -> None:
    assert row.searched_at is not None
    names = dict(
        (
            await session.execute(
                select(CONTACTS.c.id, CONTACTS.c.name).where(
                    CONTACTS.c.id.in_([c["contact_id"] for c in row.candidates])
                )
            )
        ).all()
    )
    emit(
        session,
        DuplicatesFound(
            contact_id=row.contact_id,
            chat_id=row.chat_id,
            agent_id=row.agent_id,
            count=row.count,
            candidates=[
                DuplicateCandidate(name=names.get(c["contact_id"], ""), **c) for c in row.candidates
            ],
            searched_at=row.searched_at,
        ),
        subject=row.contact_id,
    )


async def search_for_chats(
    session: AsyncSession, events: Sequence[ChatOpened | ChatOffered]
) -> None:
    """A new chat's search, once per chat; an offer tells who must see its result.

    The per-chat row is locked by both, so whichever of the search and the offer comes second
    publishes the result naming the agent, across replicas too.
    """
    rules: list[Rule] | None = None
    for event in events:
        await session.execute(
            insert_ignore(session, SEARCHES),
            {
                "chat_id": event.chat_id,
                "contact_id": event.contact_id,
                "count": 0,
                "candidates": [],
            },
        )
        row = await _locked_search(session, event.chat_id)
        if isinstance(event, ChatOffered):
            row.agent_id = event.agent_id
            if row.searched_at is not None:
                await _announce(session, row)
            continue
        if row.searched_at is not None:
            continue
        if rules is None:
            rules = await active_rules(session)
        row.contact_id = await _live_id(session, event.contact_id)
        me = (await profiles(session, [row.contact_id])).get(row.contact_id)
        matches = await search(session, me, rules) if me is not None and rules else []
        row.count = len(matches)
        row.candidates = [
            {
                "contact_id": m.contact_id,
                "score": m.score,
                "rule_id": m.rule.id,
                "rule_name": m.rule.name,
            }
            for m in matches[:KEEP]
        ]
        row.searched_at = utcnow()
        await session.flush()
        await _announce(session, row)


class Candidate(BaseModel):
    contact: ContactOut
    score: float
    rule_id: str
    rule_name: str


class DuplicatesOut(BaseModel):
    """The "Current" contact and its possible duplicates, best first."""

    current: ContactOut
    chat_id: str | None
    searched_at: datetime | None
    count: int
    candidates: list[Candidate]


async def duplicates_of(session: AsyncSession, current: ContactOut) -> DuplicatesOut:
    """The result of the contact's latest search (from its newest chat), less the candidates
    merged since; a contact never searched yet is searched now (not stored)."""
    row = await session.scalar(
        select(DuplicateSearch)
        .where(DuplicateSearch.contact_id == current.id, DuplicateSearch.searched_at.is_not(None))
        .order_by(DuplicateSearch.searched_at.desc())
        .limit(1)
    )
    if row is not None:
        chat_id, searched_at, count = row.chat_id, row.searched_at, row.count
        found: list[dict[str, Any]] = row.candidates
    else:
        me = (await profiles(session, [current.id]))[current.id]
        matches = await search(session, me, await active_rules(session))
        chat_id, searched_at, count = None, utcnow(), len(matches)
        found = [
            {
                "contact_id": m.contact_id,
                "score": m.score,
                "rule_id": m.rule.id,
                "rule_name": m.rule.name,
            }
            for m in matches[:KEEP]
        ]
    live = await contacts_out(session, [c["contact_id"] for c in found])
    candidates = [
        Candidate(
            contact=live[c["contact_id"]],
            score=c["score"],
            rule_id=c["rule_id"],
            rule_name=c["rule_name"],
        )
        for c in found
        if c["contact_id"] in live
    ]
    gone = len(found) - len(candidates)
    return DuplicatesOut(
        current=current,
        chat_id=chat_id,
        searched_at=searched_at,
        count=max(len(candidates), count - gone),
        candidates=candidates,
    )
