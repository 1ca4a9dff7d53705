"""Rows that live in one environment and are inherited from `default`: secrets, catalogs.

A run (or a listing) in environment E sees every row of `default` that E does not
override with a row of the same name, plus E's own; `all` shows every row of every
environment. The functions here serve any model with `account_id`, `environment_id`
and `name` (models.Secret, models.Catalog); each returns rows as (row, name of its
environment).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from tower.core import crypto, errors
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.apps import get_or_create_environment
from tower.server.services.context import Principal, owned
from tower.server.store import models

Scoped = TypeVar("Scoped", models.Secret, models.Catalog)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows a listing or export covers: what a run in `environment` sees, or
    every row of every environment when `all_environments` is set."""

    environment: str = DEFAULT_ENVIRONMENT
    all_environments: bool = False


# ------------------------------------------------------------------------ errors


def not_found(kind: str, name: str, environment: str) -> errors.NotFound:
    """No `kind` ('secret', 'catalog': as the CLI names it) `name` in `environment`."""
    return errors.NotFound(
        f"{kind.capitalize()} '{name}' was not found in environment '{environment}'. "
        f"See the {kind}s there with `tower {kind}s list --environment={environment}`."
    )


# ------------------------------------------------------------------------ queries


def _with_environment(model: type[Scoped], principal: Principal) -> Select[tuple[Scoped, str]]:
    """The caller's rows, each with the name of its environment."""
    stmt = select(model, models.Environment.name).join(
        models.Environment, models.Environment.id == model.environment_id
    )
    return owned(stmt, model, principal)


def find(
    session: Session,
    model: type[Scoped],
    principal: Principal,
    name: str,
    environment: str,
    *,
    lock: bool = False,
) -> Scoped | None:
    """The row `name` defined in `environment` itself (never an inherited one)."""
    stmt = owned(select(model), model, principal).join(
        models.Environment, models.Environment.id == model.environment_id
    )
    stmt = stmt.where(model.name == name, models.Environment.name == environment)
    if lock:
        stmt = stmt.with_for_update(of=model)
    return session.scalar(stmt)


def _prefer_own(rows: Iterable[tuple[Scoped, str]]) -> list[tuple[Scoped, str]]:
    """Rows of `default` and of one other environment → what that environment sees:
    its own row wins over `default`'s of the same name."""
    chosen: dict[str, tuple[Scoped, str]] = {}
    for row, environment in rows:
        if row.name not in chosen or environment != DEFAULT_ENVIRONMENT:
            chosen[row.name] = (row, environment)
    return list(chosen.values())


def visible(
    session: Session,
    model: type[Scoped],
    principal: Principal,
    selection: Selection,
    *filters: ColumnElement[bool],
) -> list[tuple[Scoped, str]]:
    """The caller's rows `selection` covers (and `filters` keep), sorted by name then
    environment."""
    stmt = _with_environment(model, principal).where(*filters)
    if selection.all_environments:
        rows = [(row, env) for row, env in session.execute(stmt)]
    else:
        names = [DEFAULT_ENVIRONMENT, selection.environment]
        rows = _prefer_own(session.execute(stmt.where(models.Environment.name.in_(names))))
    return sorted(rows, key=lambda row: (row[0].name, row[1]))


def seen_by_run(
    session: Session, model: type[Scoped], account_id: uuid.UUID, environment_id: uuid.UUID
) -> list[tuple[Scoped, str]]:
    """The rows a run in `environment_id` gets, in no particular order."""
    values = {"run_account_id": account_id, "run_environment_id": environment_id}
    return _prefer_own(session.execute(_seen_by_run_statement(model), values))


@functools.cache
def _seen_by_run_statement(model: type[Scoped]) -> Select[tuple[Scoped, str]]:
    # Built once per model: every claim runs it.
    # No Principal on this path (the dispatcher acts for the run's account), so the
    # tenancy filter is written out: both the row and its environment are the account's.
    account_id = bindparam("run_account_id")
    return (
        select(model, models.Environment.name)
        .join(models.Environment, models.Environment.id == model.environment_id)
        .where(
            model.account_id == account_id,
            models.Environment.account_id == account_id,
            or_(
                model.environment_id == bindparam("run_environment_id"),
                models.Environment.name == DEFAULT_ENVIRONMENT,
            ),
        )
    )


def count_own(session: Session, model: type[Scoped], environment_id: uuid.UUID) -> int:
    """How many rows an environment holds itself (inherited ones not counted)."""
    stmt = select(func.count()).select_from(model).where(model.environment_id == environment_id)
    return int(session.scalar(stmt) or 0)


# ------------------------------------------------------------------------ use cases


def environment_for_new(
    session: Session,
    model: type[Scoped],
    principal: Principal,
    name: str,
    environment: str,
    already_exists: Callable[[str, str], str],
) -> models.Environment:
    """The environment a new row `name` goes into, created on first use; 409 with the
    message `already_exists(name, environment)` if it holds a row of that name already."""
    env = get_or_create_environment(session, principal, environment)
    if find(session, model, principal, name, environment) is not None:
        message = already_exists(name, environment)
        raise errors.AlreadyExists(message, location="body.name", value=name)
    return env


def create_once_more(insert: Callable[[], T], what: str) -> T:
    """Run `insert` (one transaction: check the row does not exist, then add it).

    A concurrent request may create the environment or this very row first: then once
    more, and the existence check sees what that request committed (a clean 409).
    """
    try:
        return insert()
    except DatabaseIntegrityError:
        pass
    try:
        return insert()
    except DatabaseIntegrityError as exc:
        raise errors.Conflict(
            f"{what} was being changed by another request at the same time. Try again."
        ) from exc


def page_of(items: list[Any], page: int, page_size: int) -> list[Any]:
    """`page=0` is every item (the official CLI relies on it); pages count from 1."""
    if page <= 0:
        return items
    start = (page - 1) * page_size
    return items[start : start + page_size]


def check_public_key(public_key_pem: str) -> None:
    """The key an export encrypts to must be a usable RSA public key (422 otherwise)."""
    try:
        crypto.load_public_key(public_key_pem)
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(
            f"{exc.message} Send the RSA public key (2048 bits or more) to encrypt the "
            "exported values to.",
            location="body.public_key",
        ) from exc
