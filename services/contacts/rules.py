"""Duplicate rules: data that supervisors list, create, activate and deactivate.

A rule is a list of conditions that must all hold for two contacts to be possible duplicates:
the name similar above a threshold (or the same, once normalized), a phone or an e-mail in
common, the same account. A rule needs a name, phone or e-mail condition: those are what the
search can look up (an account alone is shared by a whole company). A match scores the lowest
of its conditions' scores: the name's similarity, 100 for anything exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.driver import DriverTx
from libs.common.envelope import new_id, utcnow
from services.contacts.models import DuplicateRule
from services.contacts.names import name_score

RULES = cast(Table, DuplicateRule.__table__)

MIN_THRESHOLD = 70  # below this, names as different as "Ivan Petrov" and "Pavel Petrov" match
SEARCHABLE = {"name", "phone", "email"}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Literal["name", "phone", "email", "account"]
    match: Literal["similar", "exact"] = Field(
        description="`similar`: the names' similarity (0-100) is at least `threshold`; "
        "`exact`: the same normalized name, a phone or e-mail in common, the same account."
    )
    threshold: int | None = Field(
        default=None,
        ge=MIN_THRESHOLD,
        le=100,
        description="For `similar` only: the lowest similarity that matches.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if self.match == "similar":
            if self.field != "name":
                raise ValueError(f"{self.field} is compared exactly: use match 'exact'")
            if self.threshold is None:
                raise ValueError("a 'similar' condition needs a threshold (70-100)")
        elif self.threshold is not None:
            raise ValueError("threshold applies to 'similar' conditions only")
        return self


def _searchable(conditions: list[Condition]) -> list[Condition]:
    fields = [c.field for c in conditions]
    if len(set(fields)) != len(fields):
        raise ValueError("each field may appear in one condition of a rule")
    if not SEARCHABLE & set(fields):
        raise ValueError(
            "a rule needs a name, phone or email condition: an account alone is shared by "
            "everyone at a company"
        )
    return conditions


Conditions = Annotated[
    list[Condition], Field(min_length=1, max_length=4), AfterValidator(_searchable)
]
RuleName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RuleName
    conditions: Conditions
    active: bool = True


class RulePatch(BaseModel):
    """Fields left out stay as they are: `{"active": false}` deactivates a rule."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName | None = None
    conditions: Conditions | None = None
    active: bool | None = None


class RuleOut(BaseModel):
    id: str
    name: str
    conditions: list[Condition]
    active: bool
    created_at: datetime
    updated_at: datetime | None
    updated_by: str | None

    @classmethod
    def of(cls, rule: DuplicateRule) -> RuleOut:
        return cls.model_validate(rule, from_attributes=True)


@dataclass(frozen=True)
class Profile:
    """What the rules compare of a contact."""

    id: str
    name_key: str
    phones: frozenset[str]
    emails: frozenset[str]
    account_key: str | None


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    conditions: tuple[Condition, ...]

    def uses(self, field: str) -> bool:
        return any(c.field == field for c in self.conditions)

    def score(self, a: Profile, b: Profile) -> float | None:
        """The match's score, or None when a condition fails."""
        score = 100.0
        for condition in self.conditions:
            value = _condition_score(condition, a, b)
            if value is None:
                return None
            score = min(score, value)
        return score


def _condition_score(condition: Condition, a: Profile, b: Profile) -> float | None:
    if condition.field == "name":
        if not a.name_key or not b.name_key:
            return None
        if condition.match == "exact":
            return 100.0 if a.name_key == b.name_key else None
        score = name_score(a.name_key, b.name_key)
        return score if score >= (condition.threshold or 100) else None
    if condition.field == "phone":
        return 100.0 if a.phones & b.phones else None
    if condition.field == "email":
        return 100.0 if a.emails & b.emails else None
    return 100.0 if a.account_key and a.account_key == b.account_key else None


_ACTIVE = (
    select(RULES.c.id, RULES.c.name, RULES.c.conditions)
    .where(RULES.c.active.is_(True))
    .order_by(RULES.c.name)
)


async def active_rules(tx: DriverTx) -> list[Rule]:
    return [
        Rule(rule_id, name, tuple(Condition.model_validate(c) for c in conditions))
        for rule_id, name, conditions in await tx.fetch(_ACTIVE)
    ]


async def list_rules(session: AsyncSession) -> list[RuleOut]:
    rows = await session.scalars(select(DuplicateRule).order_by(DuplicateRule.name))
    return [RuleOut.of(r) for r in rows]


def _dump(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [c.model_dump(exclude_none=True) for c in conditions]


async def create_rule(session: AsyncSession, data: RuleIn, agent_id: str | None) -> RuleOut:
    rule = DuplicateRule(
        id=new_id(),
        name=data.name,
        conditions=_dump(data.conditions),
        active=data.active,
        created_at=utcnow(),
        updated_by=agent_id,
    )
    session.add(rule)
    await session.flush()
    return RuleOut.of(rule)


async def update_rule(
    session: AsyncSession, rule_id: str, patch: RulePatch, agent_id: str | None
) -> RuleOut | None:
    rule = await session.get(DuplicateRule, rule_id, with_for_update=True)
    if rule is None:
        return None
    if patch.name is not None:
        rule.name = patch.name
    if patch.conditions is not None:
        rule.conditions = _dump(patch.conditions)
    if patch.active is not None:
        rule.active = patch.active
    rule.updated_at = utcnow()
    rule.updated_by = agent_id
    await session.flush()
    return RuleOut.of(rule)
