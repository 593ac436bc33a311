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

import functools
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Boolean, Integer, Select, String, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import any_key_of, any_of, insert_ignore, key_values
from libs.common.driver import DriverTx, in_session
from libs.common.envelope import utcnow
from libs.common.events import ChatOffered, ChatOpened, DuplicateCandidate, DuplicatesFound
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


def _profile(contact_id: str, name_key: str, account_key: str | None) -> Profile:
    return Profile(contact_id, name_key, frozenset(), frozenset(), account_key)


@functools.cache
def _live_stmt(postgres: bool) -> Select[Any]:
    """Live contacts `:ids`, as `_profile` takes them."""
    return select(CONTACTS.c.id, CONTACTS.c.name_key, CONTACTS.c.account_key).where(
        any_of(postgres, CONTACTS.c.id, "ids"), CONTACTS.c.merged_into.is_(None)
    )


async def _live(tx: DriverTx, ids: Collection[str]) -> dict[str, Profile]:
    """Profiles of these live contacts, without phones or e-mails."""
    if not ids:
        return {}
    rows = await tx.fetch(_live_stmt(tx.postgres), {"ids": sorted(ids)})
    return {row[0]: _profile(*row) for row in rows}


async def profiles(tx: DriverTx, ids: Sequence[str]) -> dict[str, Profile]:
    """What the rules compare, for these live contacts."""
    live = await _live(tx, ids)
    points = await points_of(tx, list(live))
    return {
        contact_id: replace(
            profile,
            phones=frozenset(points[contact_id]["phone"]),
            emails=frozenset(points[contact_id]["email"]),
        )
        for contact_id, profile in live.items()
    }


@dataclass(frozen=True)
class _NameQuery:
    """One searched name key, as the index looks it up."""

    full: list[str]  # its indexed words
    one_word: bool  # one-word names are compared with one-word names only

    @classmethod
    def of(cls, key: str) -> _NameQuery:
        return cls(indexed_words(key), len(key.split()) == 1)

    @functools.cached_property
    def spellings(self) -> dict[str, set[int]]:
        """Every spelling looked up -> the words it stands for."""
        spellings: dict[str, set[int]] = defaultdict(set)
        for i, word in enumerate(self.full):
            for spelling in _near_spellings(word):
                spellings[spelling].add(i)
        return spellings

    def words_range(self) -> tuple[int, int]:
        """The `name_words.words` a candidate may have."""
        return (1, 1) if self.one_word else (2, MAX_WORDS)


MAX_WORDS = 32767  # `name_words.words` is a smallint


@functools.lru_cache(maxsize=20_000)
def _near_spellings(word: str) -> tuple[str, ...]:
    """`near_spellings`, kept: first names and common surnames come again and again."""
    return tuple(near_spellings(word))


# The name lookup of many names at once, grouped in the database (the rows of common words stay
# there). Each distinct word of the batch is sent with its spellings once (`_SPELLED`), and each
# name as its words (`_ASKED`). Built once: its cache key is then computed once, not per search.
_SPELLED = (
    func.unnest(
        bindparam("spellings", type_=ARRAY(String)),
        bindparam("spelled_words", type_=ARRAY(Integer)),
        bindparam("as_is", type_=ARRAY(Boolean)),
    )
    .table_valued("spelling", "word", "as_is")
    .render_derived(with_types=False)
)
_ASKED = (
    func.unnest(
        bindparam("words", type_=ARRAY(Integer)),
        bindparam("word_indexes", type_=ARRAY(Integer)),
        bindparam("queries", type_=ARRAY(Integer)),
        bindparam("full_counts", type_=ARRAY(Integer)),
        bindparam("min_words", type_=ARRAY(Integer)),
        bindparam("max_words", type_=ARRAY(Integer)),
    )
    .table_valued("word", "word_index", "query", "full_count", "min_words", "max_words")
    .render_derived(with_types=False)
)
_MATCHED = func.count(_ASKED.c.word_index.distinct())
# Of those, the words spelled the same: among as many words in common, closer names first (a
# common name can have more candidates than are kept).
_SAME = _MATCHED.filter(_SPELLED.c.as_is)
# Two words in common, or all the words of a name that has fewer.
_NEEDED = func.least(2, func.min(_ASKED.c.full_count), func.max(NAME_WORDS.c.full_words))
_GROUPED = (
    select(
        _ASKED.c.query,
        NAME_WORDS.c.contact_id,
        _MATCHED.label("matched"),
        _SAME.label("same"),
    )
    .join(_SPELLED, NAME_WORDS.c.word == _SPELLED.c.spelling)
    .join(_ASKED, _ASKED.c.word == _SPELLED.c.word)
    .where(NAME_WORDS.c.words.between(_ASKED.c.min_words, _ASKED.c.max_words))
    .group_by(_ASKED.c.query, NAME_WORDS.c.contact_id)
    .having(_MATCHED >= _NEEDED)
    .subquery()
)
# Materialized: computed once, whatever the planner expects of the join below (with fresh
# statistics it can expect one contact and re-run the grouping for every contact row).
_RANKED = (
    select(
        _GROUPED.c.query,
        _GROUPED.c.contact_id,
        func.row_number()
        .over(
            partition_by=_GROUPED.c.query,
            order_by=(_GROUPED.c.matched.desc(), _GROUPED.c.same.desc()),
        )
        .label("rank"),
    )
    .cte("ranked")
    .prefix_with("MATERIALIZED", dialect="postgresql")
)
_BY_NAMES_PG = (
    select(_RANKED.c.query, CONTACTS.c.id, CONTACTS.c.name_key, CONTACTS.c.account_key)
    .join(CONTACTS, CONTACTS.c.id == _RANKED.c.contact_id)
    .where(_RANKED.c.rank <= NAME_CANDIDATES, CONTACTS.c.merged_into.is_(None))
)


async def by_names(tx: DriverTx, keys: Sequence[str]) -> list[dict[str, Profile]]:
    """For each name key, the contacts whose name shares enough words with it, each within one
    edit, as profiles without phones or e-mails: one statement for all the keys on PostgreSQL."""
    queries = [_NameQuery.of(key) for key in keys]
    found: list[dict[str, Profile]] = [{} for _ in keys]
    wanted = [i for i, q in enumerate(queries) if q.full]  # initials only: nothing to look up
    if not wanted:
        return found
    if tx.postgres:
        columns: dict[str, list[Any]] = {
            name: []
            for name in (
                "spellings", "spelled_words", "as_is", "words", "word_indexes", "queries",
                "full_counts", "min_words", "max_words",
            )
        }  # fmt: skip
        numbers: dict[str, int] = {}  # each distinct word -> its number in the statement
        for i in wanted:
            query = queries[i]
            low, high = query.words_range()
            for index, word in enumerate(query.full):
                number = numbers.get(word)
                if number is None:
                    number = numbers[word] = len(numbers)
                    spellings = _near_spellings(word)
                    columns["spellings"] += spellings
                    columns["spelled_words"] += [number] * len(spellings)
                    columns["as_is"] += [s == word for s in spellings]
                for name, value in (
                    ("words", number), ("word_indexes", index), ("queries", i),
                    ("full_counts", len(query.full)), ("min_words", low), ("max_words", high),
                ):  # fmt: skip
                    columns[name].append(value)
        for query, contact_id, key, account_key in await tx.fetch(_BY_NAMES_PG, columns):
            found[query][contact_id] = _profile(contact_id, key, account_key)
        return found
    # SQLite (embedded mode, small data): the same lookup, grouped here.
    every = sorted({s for i in wanted for s in queries[i].spellings})
    by_word: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for word, contact_id, words, full_words in await tx.fetch(
        select(
            NAME_WORDS.c.word, NAME_WORDS.c.contact_id, NAME_WORDS.c.words, NAME_WORDS.c.full_words
        ).where(NAME_WORDS.c.word.in_(every))
    ):
        by_word[word].append((contact_id, words, full_words))
    chosen: dict[int, list[str]] = {}
    for i in wanted:
        query = queries[i]
        low, high = query.words_range()
        hits: dict[str, set[int]] = defaultdict(set)
        same: dict[str, set[int]] = defaultdict(set)
        full_of: dict[str, int] = {}
        for spelling, indexes in query.spellings.items():
            as_is = {n for n in indexes if query.full[n] == spelling}
            for contact_id, words, count in by_word.get(spelling, ()):
                if low <= words <= high:
                    hits[contact_id] |= indexes
                    same[contact_id] |= as_is
                    full_of[contact_id] = count
        ids = [c for c, h in hits.items() if len(h) >= min(2, len(query.full), full_of[c])]
        ids.sort(key=lambda c: (-len(hits[c]), -len(same[c])))
        chosen[i] = ids[:NAME_CANDIDATES]
    live = await _live(tx, {c for ids in chosen.values() for c in ids})
    for i, ids in chosen.items():
        found[i] = {c: live[c] for c in ids if c in live}
    return found


async def by_name(tx: DriverTx, key: str) -> dict[str, Profile]:
    """Contacts whose name shares enough words with `key` (see `by_names`)."""
    return (await by_names(tx, [key]))[0]


async def name_candidates(tx: DriverTx, key: str) -> list[str]:
    return list(await by_name(tx, key))


Shared = dict[str, dict[str, set[str]]]  # contact id -> {kind: values shared}


@functools.cache
def _holders(postgres: bool) -> Select[Any]:
    return select(POINTS.c.contact_id, POINTS.c.kind, POINTS.c.value).where(
        any_key_of(postgres, [POINTS.c.kind, POINTS.c.value], "points")
    )


async def by_points(tx: DriverTx, mes: Sequence[Profile], kinds: set[str]) -> list[Shared]:
    """For each profile, the contacts with a phone or e-mail in common with it: one statement."""
    wanted: set[tuple[str, str]] = set()
    for me in mes:
        wanted.update(("phone", v) for v in me.phones if "phone" in kinds)
        wanted.update(("email", v) for v in me.emails if "email" in kinds)
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    if wanted:
        # Also rows of a kind with another kind's value: `holders` is read for `wanted` only.
        for contact_id, kind, value in await tx.fetch(
            _holders(tx.postgres), key_values("points", wanted)
        ):
            holders[kind, value].append(contact_id)
    out: list[Shared] = []
    for me in mes:
        shared: Shared = defaultdict(lambda: {"phone": set(), "email": set()})
        for kind, values in (("phone", me.phones), ("email", me.emails)):
            if kind in kinds:
                for value in values:
                    for contact_id in holders.get((kind, value), ()):
                        shared[contact_id][kind].add(value)
        out.append(shared)
    return out


async def search_many(
    tx: DriverTx, mes: Sequence[Profile], rules: Sequence[Rule]
) -> list[list[Match]]:
    """Every live contact that some rule matches with each of `mes`, best first; a few
    statements whatever the number of profiles.

    A candidate's phones and e-mails are known only where it shares them with its searched
    contact, which is all the rules ask of them.
    """
    if not mes or not rules:
        return [[] for _ in mes]
    by_name_found = (
        await by_names(tx, [me.name_key for me in mes])
        if any(r.uses("name") for r in rules)
        else [{} for _ in mes]
    )
    shared_of = await by_points(
        tx, mes, {f for f in ("phone", "email") if any(r.uses(f) for r in rules)}
    )
    missing = {
        c
        for found, shared in zip(by_name_found, shared_of, strict=True)
        for c in shared
        if c not in found
    }
    extra = await profiles(tx, sorted(missing))
    results = []
    for me, found, shared in zip(mes, by_name_found, shared_of, strict=True):
        candidates = dict(found)
        candidates.update((c, extra[c]) for c in shared if c not in candidates and c in extra)
        candidates.pop(me.id, None)
        matches = []
        for other in candidates.values():
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
        results.append(matches)
    return results


async def search(tx: DriverTx, me: Profile, rules: Sequence[Rule]) -> list[Match]:
    """Every live contact that some rule matches with `me`, best first."""
    return (await search_many(tx, [me], rules))[0]


def _stored(matches: Sequence[Match]) -> list[dict[str, Any]]:
    return [
        {
            "contact_id": m.contact_id,
            "score": m.score,
            "rule_id": m.rule.id,
            "rule_name": m.rule.name,
        }
        for m in matches[:KEEP]
    ]


@dataclass
class _Search:
    """A chat's `duplicate_searches` row, as this batch leaves it."""

    chat_id: str
    contact_id: str
    agent_id: str | None
    searched_at: datetime | None
    count: int
    candidates: list[dict[str, Any]]
    changed: bool = False


# Built once (their cache keys are computed once): the batch's rows, locked in one order so
# that replicas wait for each other rather than deadlock, and their new state, executemany.
@functools.cache
def _lock(postgres: bool) -> Select[Any]:
    return (
        select(
            SEARCHES.c.chat_id,
            SEARCHES.c.contact_id,
            SEARCHES.c.agent_id,
            SEARCHES.c.searched_at,
            SEARCHES.c.count,
            SEARCHES.c.candidates,
        )
        .where(any_of(postgres, SEARCHES.c.chat_id, "chat_ids"))
        .order_by(SEARCHES.c.chat_id)
        .with_for_update()
    )


@functools.cache
def _merged_into(postgres: bool) -> Select[Any]:
    return select(CONTACTS.c.id, CONTACTS.c.merged_into).where(
        any_of(postgres, CONTACTS.c.id, "ids")
    )


@functools.cache
def _names(postgres: bool) -> Select[Any]:
    return select(CONTACTS.c.id, CONTACTS.c.name).where(any_of(postgres, CONTACTS.c.id, "ids"))


_SAVE = (
    update(SEARCHES)
    .where(SEARCHES.c.chat_id == bindparam("b_chat_id"))
    .values(
        contact_id=bindparam("b_contact_id"),
        agent_id=bindparam("b_agent_id"),
        searched_at=bindparam("b_searched_at"),
        count=bindparam("b_count"),
        candidates=bindparam("b_candidates", type_=SEARCHES.c.candidates.type),
    )
)


async def search_for_chats(tx: DriverTx, events: Sequence[ChatOpened | ChatOffered]) -> None:
    """A new chat's search, once per chat; an offer tells who must see its result.

    The per-chat row is locked by both, so whichever of the search and the offer comes second
    publishes the result naming the agent, across replicas too. A batch of events costs a few
    statements whatever its size: every search of the batch is made at once.
    """
    first: dict[str, ChatOpened | ChatOffered] = {}  # the first event of a chat makes its row
    for event in events:
        first.setdefault(event.chat_id, event)
    await tx.execute_many(
        insert_ignore(tx.postgres, SEARCHES),
        [  # in chat order, like the lock below: replicas wait for each other, not deadlock
            {
                "chat_id": chat_id,
                "contact_id": first[chat_id].contact_id,
                "count": 0,
                "candidates": [],
            }
            for chat_id in sorted(first)
        ],
    )
    locked = await tx.fetch(_lock(tx.postgres), {"chat_ids": sorted(first)})
    rows = {row[0]: _Search(*row) for row in locked}
    # Which chats this batch searches: those opened and not searched yet.
    to_search: dict[str, str] = {}
    for event in events:
        row = rows[event.chat_id]
        if isinstance(event, ChatOpened) and row.searched_at is None:
            to_search.setdefault(event.chat_id, event.contact_id)
    results: dict[str, list[Match]] = {}
    contact_of: dict[str, str] = {}
    if to_search:
        rules = await active_rules(tx)
        merged = await tx.fetch(_merged_into(tx.postgres), {"ids": sorted(set(to_search.values()))})
        survivors = dict(merged)
        contact_of = {chat: survivors.get(c) or c for chat, c in to_search.items()}
        mes = await profiles(tx, sorted(set(contact_of.values())))
        searched = list(mes.values())
        for me, matches in zip(searched, await search_many(tx, searched, rules), strict=True):
            results[me.id] = matches
    # The events in order, as if one at a time.
    now = utcnow()
    announced: list[_Search] = []
    for event in events:
        row = rows[event.chat_id]
        if isinstance(event, ChatOffered):
            row.agent_id, row.changed = event.agent_id, True
            if row.searched_at is not None:
                announced.append(replace(row))
            continue
        if row.searched_at is not None:
            continue
        row.contact_id = contact_of[event.chat_id]
        matches = results.get(row.contact_id, [])
        row.count, row.candidates = len(matches), _stored(matches)
        row.searched_at, row.changed = now, True
        announced.append(replace(row))
    if changed := [row for row in rows.values() if row.changed]:
        await tx.execute_many(
            _SAVE,
            [
                {
                    "b_chat_id": row.chat_id,
                    "b_contact_id": row.contact_id,
                    "b_agent_id": row.agent_id,
                    "b_searched_at": row.searched_at,
                    "b_count": row.count,
                    "b_candidates": row.candidates,
                }
                for row in changed
            ],
        )
    # One result per chat and batch, as it stands at the end: a search and its offer that
    # arrived together publish the result once, naming the agent.
    await _announce(tx, list({row.chat_id: row for row in announced}.values()))


async def _announce(tx: DriverTx, searches: Sequence[_Search]) -> None:
    """`contact.duplicates_found` for each search, in order, the candidates named."""
    ids = {c["contact_id"] for row in searches for c in row.candidates}
    names: dict[str, str] = {}
    if ids:
        names = dict(await tx.fetch(_names(tx.postgres), {"ids": sorted(ids)}))
    for row in searches:
        assert row.searched_at is not None
        tx.emit(
            DuplicatesFound(
                contact_id=row.contact_id,
                chat_id=row.chat_id,
                agent_id=row.agent_id,
                count=row.count,
                candidates=[
                    DuplicateCandidate(name=names.get(c["contact_id"], ""), **c)
                    for c in row.candidates
                ],
                searched_at=row.searched_at,
            ),
            subject=row.contact_id,
        )


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
        tx = in_session(session)
        me = (await profiles(tx, [current.id]))[current.id]
        matches = await search(tx, me, await active_rules(tx))
        chat_id, searched_at, count = None, utcnow(), len(matches)
        found = _stored(matches)
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
