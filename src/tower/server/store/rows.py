"""Writing rows on the hot paths without the ORM's unit of work.

A flush costs the control plane far more per object than the INSERT it emits: for
each object it sorts, collects, compares and post-processes state. Runs are created,
claimed and ended many times a second, and each writes rows that are new and never
changed again in the same transaction (a run as it is queued, its transition rows,
its audit event). These go in here with one compiled INSERT each, at once, inside the
caller's transaction (and savepoint): a rollback undoes them like any other change.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, Table, insert, inspect
from sqlalchemy.orm import Session, make_transient_to_detached

from tower.server.store.models import Base


def append(session: Session, model: type[Base], **values: Any) -> None:
    """Insert one row of `model` now; columns left out take their defaults. Objects
    the session was given and has not written yet are flushed first: the row may name
    one of them (an audit event the account just created, say)."""
    if session.new:
        session.flush()
    session.connection().execute(_insert(model.__table__), values)  # type: ignore[arg-type]


def insert_now(session: Session, obj: Base) -> None:
    """Write a new (transient) object's row now and keep the object in the session as
    persistent, as if it had been loaded: later changes to it are flushed as usual.
    An attribute left unset takes its column's default, or None, on the object too:
    the object says what the row holds without a read."""
    mapper = inspect(obj).mapper
    values: dict[str, Any] = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if prop.key not in obj.__dict__:
            setattr(obj, prop.key, _default_of(column))
        values[column.key] = obj.__dict__[prop.key]
        if column.primary_key and values[column.key] is None:
            raise ValueError(f"{column}: insert_now needs the primary key before the insert")
    session.connection().execute(_insert(mapper.local_table), values)
    make_transient_to_detached(obj)
    session.add(obj)


def _default_of(column: Any) -> Any:
    default = column.default
    if default is not None and default.is_callable:
        # Stored wrapped to take an execution context, which ours ignore.
        return default.arg(None)
    if default is not None and default.is_scalar:
        return default.arg
    if default is None and column.server_default is None:
        return None
    raise ValueError(f"{column} takes a default only the database computes: flush it instead")


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)
