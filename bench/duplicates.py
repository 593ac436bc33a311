"""Duplicate search benchmark: one search among 100k and 1M contacts (`make bench-duplicates`).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.duplicates

On a fresh PostgreSQL database, contacts' own migrations make its schema; realistic names
(`bench/people.py`: several locales, patronymics, initials, word order, Cyrillic in Latin,
typos), with phones, e-mails and accounts for some, are inserted with COPY in the product's
shape (`contacts`, `name_words`, `contact_points`). At each size:

- **search**: `services.contacts.duplicates.search` under the default rules, as a new chat's
  contact runs it, for searched names half of which are variants of existing contacts (a typo,
  the words swapped, an initial) and half new people;
- **naive scan**: rapidfuzz's `process.extract` with `token_sort_ratio` over every contact's
  name key, held in memory (what scoring every contact in Python would cost at best);
- **pg_trgm**: the alternative the design started from, a GIN trigram index on `name_key`
  queried with `%` at similarity 0.5, for comparison (built here, not by the product);
- **recall**: of the contacts whose name the product's scorer puts at the "Similar name" rule's
  threshold or more against a searched name, the share each candidate source finds. Found by a
  full scan: rapidfuzz's `token_set_ratio` over every name (at least 50), then `name_score`.

Results go to docs/benchmarks.md between `<!-- duplicates:start -->` and `<!-- duplicates:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rapidfuzz import fuzz, process
from sqlalchemy import text

from bench.e2e import background_load, cpu_model, git_commit, log, pct
from bench.options import add_scratch_database_options
from bench.people import People
from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.settings import Settings
from services.contacts import duplicates
from services.contacts.models import Base
from services.contacts.names import indexed_words, name_key, name_score
from services.contacts.rules import Profile, Rule, active_rules

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- duplicates:start -->", "<!-- duplicates:end -->"
TARGET_P99_S = 0.050
TRGM_THRESHOLD = 0.5
SCHEMA = "contacts"


@dataclass
class SizeResult:
    contacts: int
    name_words: int
    index_bytes: int = 0  # name_words with its indexes
    search: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    trgm: list[float] = field(default_factory=list)
    recall: dict[str, tuple[int, int]] = field(default_factory=dict)  # source -> (found, all)
    threshold: float = 0.0  # the "Similar name" rule's


@dataclass
class Dataset:
    """What was inserted, kept to draw searched names from and to scan naively."""

    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def fill(conn: asyncpg.Connection, people: People, data: Dataset, up_to: int) -> None:
    """Insert contacts until there are `up_to`, with COPY, in the product's shape."""
    rng = random.Random(len(data.names))
    accounts = [f"Company {n}" for n in range(5000)]
    now = datetime.now(UTC)
    batch = 50_000
    while len(data.names) < up_to:
        contacts, words, points = [], [], []
        for _ in range(min(batch, up_to - len(data.names))):
            contact_id = str(uuid.uuid4())
            name = people.name()
            key = name_key(name)
            data.ids.append(contact_id)
            data.names.append(name)
            data.keys.append(key)
            account = rng.choice(accounts) if rng.random() < 0.1 else None
            contacts.append((contact_id, name, key, account, account and account.casefold(), now))
            full = indexed_words(key)
            words += [(contact_id, w, len(key.split()), len(full)) for w in full]
            if rng.random() < 0.3:
                points.append((contact_id, "phone", f"+{rng.randrange(10**10, 10**11)}", 0))
            if rng.random() < 0.2:
                points.append((contact_id, "email", f"c{len(data.names)}@example.com", 0))
        await conn.copy_records_to_table(
            "contacts",
            records=contacts,
            columns=["id", "name", "name_key", "account", "account_key", "created_at"],
            schema_name=SCHEMA,
        )
        await conn.copy_records_to_table(
            "name_words",
            records=words,
            columns=["contact_id", "word", "words", "full_words"],
            schema_name=SCHEMA,
        )
        await conn.copy_records_to_table(
            "contact_points",
            records=points,
            columns=["contact_id", "kind", "value", "position"],
            schema_name=SCHEMA,
        )
        log(f"  {len(data.names):,} contacts")
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.contacts")
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.name_words")
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.contact_points")


def searched_names(people: People, data: Dataset, count: int, seed: int) -> list[str]:
    """Half variants of existing contacts (they have duplicates), half new people."""
    rng = random.Random(seed)
    return [
        people.variant(rng.choice(data.names)) if n % 2 == 0 else people.name()
        for n in range(count)
    ]


def truth(query: str, keys: Sequence[str], threshold: float) -> set[int]:
    """Every contact the "Similar name" rule matches, by a full scan."""
    near = process.extract(query, keys, scorer=fuzz.token_set_ratio, score_cutoff=50, limit=None)
    return {index for key, _, index in near if name_score(query, key) >= threshold}


def similar_name_threshold(rules: Sequence[Rule]) -> float:
    [condition] = next(r for r in rules if r.name == "Similar name").conditions
    return float(condition.threshold or 100)


async def measure(
    db: Database, trgm: asyncpg.Connection | None, data: Dataset, queries: list[str], args: Any
) -> SizeResult:
    result = SizeResult(contacts=len(data.names), name_words=0)
    async with db.sessions() as session:
        result.name_words = await session.scalar(text("SELECT count(*) FROM name_words")) or 0
        result.index_bytes = (
            await session.scalar(text("SELECT pg_total_relation_size('name_words')")) or 0
        )
    async with driver_transaction(db) as tx:  # as a new chat's search runs
        rules = await active_rules(tx)
        result.threshold = similar_name_threshold(rules)
        # Warm up: the first queries of a session pay for plans and caches.
        for query in queries[:5]:
            await duplicates.search(tx, _profile(name_key(query)), rules)
        for query in queries:
            me = _profile(name_key(query))
            started = time.perf_counter()
            matches = await duplicates.search(tx, me, rules)
            result.search.append(time.perf_counter() - started)
            result.matches.append(len(matches))
            result.candidates.append(len(await duplicates.name_candidates(tx, me.name_key)))
    for query in queries[: args.naive_queries]:
        started = time.perf_counter()
        process.extract(
            name_key(query),
            data.keys,
            scorer=fuzz.token_sort_ratio,
            score_cutoff=result.threshold,
            limit=None,
        )
        result.naive.append(time.perf_counter() - started)
    trgm_found: dict[str, set[str]] = {}
    if trgm is not None:
        statement = await trgm.prepare(
            "SELECT id FROM contacts WHERE name_key % $1 AND merged_into IS NULL "
            "ORDER BY similarity(name_key, $1) DESC LIMIT 1000"
        )
        for query in queries[:5]:
            await statement.fetch(name_key(query))
        for query in queries:
            started = time.perf_counter()
            rows = await statement.fetch(name_key(query))
            result.trgm.append(time.perf_counter() - started)
            trgm_found[query] = {r["id"] for r in rows}
    found = {"index": [0, 0], "pg_trgm": [0, 0]}
    async with driver_transaction(db) as tx:
        for query in queries[: args.recall_queries]:
            expected = {data.ids[i] for i in truth(name_key(query), data.keys, result.threshold)}
            got = set(await duplicates.name_candidates(tx, name_key(query)))
            found["index"][0] += len(expected & got)
            found["index"][1] += len(expected)
            if trgm is not None:
                found["pg_trgm"][0] += len(expected & trgm_found[query])
                found["pg_trgm"][1] += len(expected)
    result.recall = {k: (v[0], v[1]) for k, v in found.items() if v[1]}
    return result


def _profile(key: str) -> Profile:
    return Profile(
        id="bench-searched-contact",
        name_key=key,
        phones=frozenset({"+4930123456"}),
        emails=frozenset({"searched@example.com"}),
        account_key=None,
    )


async def run(args: argparse.Namespace) -> tuple[list[SizeResult], dict[str, str]]:
    server = args.database_url
    name = f"chatdesk_bench_dup_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    versions = {
        "postgresql": (await admin.fetchval("SHOW server_version")).split()[0],
        "python": platform.python_version(),
        "commit": git_commit(),
        "busy_before": f"{await background_load():.0%}",
    }
    await admin.close()
    url = with_database(server, name)
    db = Database(Settings(DATABASE_URL=url, AMQP_URL=None), SCHEMA, Base.metadata, _migrations())
    results: list[SizeResult] = []
    try:
        await db.migrate()
        conn = await asyncpg.connect(url, server_settings={"search_path": f"{SCHEMA}, public"})
        trgm = None
        if args.trgm:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            await conn.execute(f"SET pg_trgm.similarity_threshold = {TRGM_THRESHOLD}")
            trgm = conn
        people = People(args.seed)
        data = Dataset()
        for size in args.sizes:
            log(f"filling to {size:,} contacts")
            await fill(conn, people, data, size)
            if trgm is not None:
                await conn.execute("DROP INDEX IF EXISTS contacts_name_trgm")
                await conn.execute(
                    "CREATE INDEX contacts_name_trgm ON contacts USING gin (name_key gin_trgm_ops)"
                )
            queries = searched_names(People(args.seed + size), data, args.queries, args.seed)
            log(f"measuring {len(queries)} searches among {size:,}")
            results.append(await measure(db, trgm, data, queries, args))
        await conn.close()
    finally:
        await db.dispose()
        if not args.keep:
            admin = await asyncpg.connect(server)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results, versions


def _migrations() -> Path:
    import services.contacts

    return Path(services.contacts.__file__).parent / "migrations"


def ms(values: Sequence[float], q: float) -> str:
    return f"{pct(values, q) * 1000:,.1f}" if values else "n/a"


def report(results: list[SizeResult], versions: dict[str, str], args: argparse.Namespace) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Duplicate search: one search among N contacts (`make bench-duplicates`, "
        "`bench/duplicates.py`)",
        "",
        f"Run {now} on commit {versions['commit']}. Machine: {os.cpu_count()} cores "
        f"({cpu_model()}), PostgreSQL {versions['postgresql']}, Python {versions['python']}. "
        f"Other work on the machine just before the run: {versions['busy_before']} of all "
        "cores. The search runs in this process against a fresh database with contacts' own "
        "migrations, under the default rules.",
        "",
        "| contacts | search p50 | p95 | **p99** | max | names looked at (mean / max) | "
        "matches (mean) | name index: rows, MB | naive scan p50 / p99 | pg_trgm 0.5 p50 / p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.contacts:,} | {ms(r.search, 50)} ms | {ms(r.search, 95)} ms | "
            f"**{ms(r.search, 99)} ms** | {ms(r.search, 100)} ms | "
            f"{statistics.mean(r.candidates):,.0f} / {max(r.candidates):,} | "
            f"{statistics.mean(r.matches):.1f} | "
            f"{r.name_words:,}, {r.index_bytes / 2**20:,.0f} | "
            f"{ms(r.naive, 50)} / {ms(r.naive, 99)} ms | "
            f"{ms(r.trgm, 50)} / {ms(r.trgm, 99)} ms |"
        )
    lines += [
        "",
        f'Recall of the "Similar name" rule ({results[0].threshold:g}) against a full scan with '
        "the same scorer:",
        "",
    ]
    lines += ["| contacts | name-word index | pg_trgm 0.5 |", "|---:|---:|---:|"]
    for r in results:
        cells = []
        for source in ("index", "pg_trgm"):
            hit, total = r.recall.get(source, (0, 0))
            cells.append(f"{hit / total:.1%} ({hit}/{total})" if total else "n/a")
        lines.append(f"| {r.contacts:,} | {cells[0]} | {cells[1]} |")
    biggest = max(results, key=lambda r: r.contacts)
    met = pct(biggest.search, 99) < TARGET_P99_S
    lines += [
        "",
        f"Target: p99 < {TARGET_P99_S * 1000:.0f} ms at 1M contacts — "
        + (f"**met** at {biggest.contacts:,}" if met else f"**not met** at {biggest.contacts:,}")
        + ".",
        "",
        f"What the figures are: {args.queries} searched names per size (half variants of "
        "existing contacts, half new people), each searched once after 5 warm-up searches; a "
        "search is `duplicates.search` (name-word lookup, phone and e-mail lookups, loading the "
        "candidates, scoring every rule on each). *Names looked at*: the contacts the name "
        "lookup returns. *Name index*: the rows of `name_words` (a row per full word of a "
        "name) and its size on disk with its indexes. *Naive scan*: "
        "`process.extract(token_sort_ratio)` over every name key in "
        f"memory, {args.naive_queries} names. *pg_trgm*: `name_key % q ORDER BY similarity "
        "LIMIT 1000` on a GIN trigram index at 0.5, the same names. *Recall*: "
        f"{args.recall_queries} names; the full scan is `token_set_ratio` ≥ 50 over every "
        "name, then `name_score` at the rule's threshold.",
        "",
        f"Command: `python -m bench.duplicates --sizes {','.join(map(str, args.sizes))} "
        f"--queries {args.queries} --naive-queries {args.naive_queries} "
        f"--recall-queries {args.recall_queries}{'' if args.trgm else ' --no-trgm'}`.",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    block = f"{MARK_START}\n{section}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:  # after the e2e section, before the notes by hand
        head, sep, tail = text.partition("<!-- e2e:end -->\n")
        text = head + sep + "\n" + block + "\n" + tail if sep else text + "\n" + block + "\n"
    path.write_text(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.duplicates",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default="100000,1000000",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        help="contacts, comma-separated",
    )
    parser.add_argument("--queries", type=int, default=300, help="searches per size")
    parser.add_argument("--naive-queries", type=int, default=20, help="naive scans per size")
    parser.add_argument("--recall-queries", type=int, default=60, help="full scans for recall")
    parser.add_argument("--no-trgm", dest="trgm", action="store_false", help="skip pg_trgm")
    parser.add_argument("--seed", type=int, default=1)
    add_scratch_database_options(parser)
    args = parser.parse_args(argv)
    if not args.sizes or min(args.sizes) < 100 or max(args.sizes) > 10_000_000:
        parser.error("--sizes: each within [100, 10000000]")
    for flag in ("queries", "naive_queries", "recall_queries"):
        if not 1 <= getattr(args, flag) <= 100_000:
            parser.error(f"--{flag.replace('_', '-')} must be within [1, 100000]")
    args.naive_queries = min(args.naive_queries, args.queries)
    args.recall_queries = min(args.recall_queries, args.queries)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results, versions = asyncio.run(run(args))
    section = report(results, versions, args)
    print(section)
    if args.no_write:
        log("not writing docs (--no-write)")
    else:
        write_section(args.output, section)
        log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
