"""Iceberg catalogs: per environment, properties sealed at rest, handed to runs as
PYICEBERG_CATALOG__* variables.

Inheritance is the secrets rule: a run (or a listing) in environment E sees every
catalog of `default` that E does not override with a catalog of the same name, plus
E's own. Every account also has a built-in `default` catalog (a pyiceberg SQL catalog
on SQLite under TOWER_HOME), created in environment `default` the first time it is
needed, unless the account already has a catalog called `default` there.

The rules for names, types and what a run receives live in `tower.core.catalogs`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import catalogs as rules
from tower.core import crypto, errors
from tower.server.services import audit, inherited, vault
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.apps import validate_environment_name
from tower.server.services.context import Principal, ServerContext
from tower.server.store import models
from tower.server.store.types import utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PropertyView:
    """A property as the API shows it: never its value, only a masked preview."""

    name: str
    preview: str
    #: the variable a run gets it as (its own one, or PYICEBERG_CATALOG__<SLUG>__<NAME>)
    environment_variable: str


@dataclass(frozen=True, slots=True)
class CatalogView:
    name: str
    environment: str
    type: str
    created_at: datetime
    updated_at: datetime
    properties: tuple[PropertyView, ...]


@dataclass(frozen=True, slots=True)
class ExportedProperty:
    name: str
    preview: str
    environment_variable: str
    encrypted_value: str
    #: computed from the stored properties (e.g. S3 Tables' REST endpoint), not stored
    derived: bool = False


@dataclass(frozen=True, slots=True)
class ExportedCatalog:
    name: str
    environment: str
    type: str
    created_at: datetime
    properties: tuple[ExportedProperty, ...]


@dataclass(frozen=True, slots=True)
class PropertyInput:
    """A property as a client sends it: its value encrypted to the server key.

    `environment_variable` None means "not given" (an update keeps the current one).
    """

    name: str
    encrypted_value: str
    environment_variable: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogSelection(inherited.Selection):
    """What a run in `environment` sees, or every catalog with `all_environments`;
    optionally only catalogs of one type."""

    type: str | None = None


@dataclass(slots=True)
class _Opened:
    """Decrypted inputs, checked, ready to be sealed."""

    values: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str | None] = field(default_factory=dict)


# ------------------------------------------------------------------------ errors


def _not_found(name: str, environment: str) -> errors.NotFound:
    return inherited.not_found("catalog", name, environment)


def _not_own(name: str, environment: str) -> errors.NotFound:
    return errors.NotFound(
        f"Catalog '{name}' is not defined in environment '{environment}' (it is inherited "
        f"from '{DEFAULT_ENVIRONMENT}'). Change it with environment='{DEFAULT_ENVIRONMENT}', "
        f"or create an override in '{environment}' with the same name."
    )


def _already_exists(name: str, environment: str) -> str:
    return (
        f"Catalog '{name}' already exists in environment '{environment}'. Update it "
        f"(PUT /v1/catalogs/{name}) or delete it first "
        f"(`tower catalogs delete {name} --environment={environment}`)."
    )


# ------------------------------------------------------------------------ inputs


def _open_inputs(ctx: ServerContext, catalog: str, inputs: Sequence[PropertyInput]) -> _Opened:
    """Decrypt and check every property before anything is stored (400/422 store nothing)."""
    opened = _Opened()
    for prop in inputs:
        if prop.name in opened.values:
            raise errors.InvalidInput(
                f"Property '{prop.name}' is given twice; send each property once.",
                location="body.properties",
                value=prop.name,
            )
        # None (update only) keeps the current variable; _check_label checks the name then.
        variable = prop.environment_variable
        if variable is not None:
            variable = rules.validate_environment_variable(variable.strip())
            rules.validate_property_name(prop.name, variable)
        opened.values[prop.name] = vault.decrypt_incoming(
            ctx, prop.encrypted_value, f"property '{prop.name}' of catalog '{catalog}'"
        )
        opened.variables[prop.name] = variable
    return opened


# ------------------------------------------------------------------------ queries


def _find(
    session: Session, principal: Principal, name: str, environment: str, *, lock: bool = False
) -> models.Catalog | None:
    """The catalog defined in `environment` itself (never an inherited one)."""
    return inherited.find(session, models.Catalog, principal, name, environment, lock=lock)


def _visible(
    session: Session, principal: Principal, selection: CatalogSelection
) -> list[tuple[models.Catalog, str]]:
    of_type = [models.Catalog.type == selection.type] if selection.type else []
    return inherited.visible(session, models.Catalog, principal, selection, *of_type)


# Built once: every claim reads the properties of the run's catalogs.
_PROPERTIES_OF = (
    select(models.CatalogProperty)
    .where(models.CatalogProperty.catalog_id.in_(bindparam("catalog_ids", expanding=True)))
    .order_by(models.CatalogProperty.name)
)


def _properties_of(
    session: Session, catalog_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[models.CatalogProperty]]:
    grouped: dict[uuid.UUID, list[models.CatalogProperty]] = {cid: [] for cid in catalog_ids}
    if not catalog_ids:
        return grouped
    for prop in session.scalars(_PROPERTIES_OF, {"catalog_ids": list(catalog_ids)}):
        grouped[prop.catalog_id].append(prop)
    return grouped


def _effective_variable(catalog: models.Catalog, prop: models.CatalogProperty) -> str:
    return prop.environment_variable or rules.env_var_name(catalog.name, prop.name)


def _view(
    catalog: models.Catalog, environment: str, props: Sequence[models.CatalogProperty]
) -> CatalogView:
    return CatalogView(
        name=catalog.name,
        environment=environment,
        type=catalog.type,
        created_at=catalog.created_at,
        updated_at=catalog.updated_at,
        properties=tuple(
            PropertyView(p.name, p.preview, _effective_variable(catalog, p)) for p in props
        ),
    )


def _views(session: Session, rows: Sequence[tuple[models.Catalog, str]]) -> list[CatalogView]:
    props = _properties_of(session, [catalog.id for catalog, _ in rows])
    return [_view(catalog, env, props[catalog.id]) for catalog, env in rows]


def _aad(prop: models.CatalogProperty) -> bytes:
    return vault.catalog_property_aad(prop.account_id, prop.catalog_id, prop.name)


def _open(key: bytes, prop: models.CatalogProperty) -> str:
    return vault.open_value(key, prop, _aad(prop))


def _seal_into(
    key: bytes, catalog: models.Catalog, prop: models.CatalogProperty, plaintext: str
) -> None:
    aad = vault.catalog_property_aad(catalog.account_id, catalog.id, prop.name)
    vault.store(prop, vault.seal(key, plaintext, aad))


def _add_properties(session: Session, key: bytes, catalog: models.Catalog, opened: _Opened) -> None:
    for name, value in opened.values.items():
        prop = models.CatalogProperty(
            catalog_id=catalog.id,
            name=name,
            account_id=catalog.account_id,
            environment_variable=opened.variables.get(name) or "",
        )
        _seal_into(key, catalog, prop, value)
        session.add(prop)


# ------------------------------------------------------------------------ use cases


def list_catalogs(
    ctx: ServerContext, principal: Principal, selection: CatalogSelection
) -> list[CatalogView]:
    with ctx.sessions.begin() as session:
        return _views(session, _visible(session, principal, selection))


def describe_catalog(
    ctx: ServerContext, principal: Principal, name: str, environment: str
) -> CatalogView:
    """The catalog `name` as environment `environment` sees it (its own or `default`'s)."""
    with ctx.sessions.begin() as session:
        selection = inherited.Selection(environment=environment)
        rows = inherited.visible(
            session, models.Catalog, principal, selection, models.Catalog.name == name
        )
        if not rows:
            raise _not_found(name, environment)
        return _views(session, rows)[0]


def create_catalog(
    ctx: ServerContext,
    principal: Principal,
    *,
    name: str,
    environment: str,
    type_: str,
    properties: Sequence[PropertyInput],
) -> CatalogView:
    """Store a new catalog (its environment is created on first use); 409 if it exists."""
    rules.validate_slug(name)
    rules.catalog_type(type_)
    validate_environment_name(environment)
    # A new property without its own variable is reached through PYICEBERG_* names.
    inputs = [replace(p, environment_variable=p.environment_variable or "") for p in properties]
    # Decrypt and check before touching the database: bad input stores nothing.
    opened = _open_inputs(ctx, name, inputs)
    rules.validate_properties(type_, opened.values)
    return inherited.create_once_more(
        lambda: _insert(ctx, principal, name, environment, type_, opened),
        f"Catalog '{name}' in environment '{environment}'",
    )


def _insert(
    ctx: ServerContext,
    principal: Principal,
    name: str,
    environment: str,
    type_: str,
    opened: _Opened,
) -> CatalogView:
    with ctx.sessions.begin() as session:
        env = inherited.environment_for_new(
            session, models.Catalog, principal, name, environment, _already_exists
        )
        catalog = models.Catalog(
            account_id=principal.account_id, environment_id=env.id, name=name, type=type_
        )
        session.add(catalog)
        session.flush()
        key = vault.account_key(ctx, session, principal.account_id)
        _add_properties(session, key, catalog, opened)
        session.flush()
        audit.record(
            session,
            principal,
            "catalog.create",
            f"catalogs/{name}",
            environment=env.name,
            type=type_,
            properties=sorted(opened.values),
        )
        return _views(session, [(catalog, env.name)])[0]


def update_catalog(
    ctx: ServerContext,
    principal: Principal,
    name: str,
    environment: str,
    properties: Sequence[PropertyInput],
) -> CatalogView:
    """Set the given properties of a catalog defined in `environment`; others stay."""
    opened = _open_inputs(ctx, name, properties)
    with ctx.sessions.begin() as session:
        catalog = _find(session, principal, name, environment, lock=True)
        if catalog is None:
            raise _missing_for_write(session, principal, name, environment)
        key = vault.account_key(ctx, session, principal.account_id)
        current = {p.name: p for p in _properties_of(session, [catalog.id])[catalog.id]}
        merged = {n: _open(key, p) for n, p in current.items()} | opened.values
        rules.validate_properties(catalog.type, merged)
        for prop_name, value in opened.values.items():
            prop = current.get(prop_name)
            variable = opened.variables[prop_name]
            if prop is None:
                prop = models.CatalogProperty(
                    catalog_id=catalog.id, name=prop_name, account_id=catalog.account_id
                )
                session.add(prop)
                prop.environment_variable = variable or ""
            elif variable is not None:
                prop.environment_variable = variable
            _check_label(prop)
            _seal_into(key, catalog, prop, value)
        catalog.updated_at = utcnow()
        session.flush()
        audit.record(
            session,
            principal,
            "catalog.update",
            f"catalogs/{name}",
            environment=environment,
            properties=sorted(opened.values),
        )
        return _views(session, [(catalog, environment)])[0]


def _check_label(prop: models.CatalogProperty) -> None:
    # Clearing a property's own variable makes its name reach pyiceberg again.
    rules.validate_property_name(prop.name, prop.environment_variable)


def _missing_for_write(
    session: Session, principal: Principal, name: str, environment: str
) -> errors.NotFound:
    if environment != DEFAULT_ENVIRONMENT and _find(session, principal, name, DEFAULT_ENVIRONMENT):
        return _not_own(name, environment)
    return _not_found(name, environment)


def delete_catalog(ctx: ServerContext, principal: Principal, name: str, environment: str) -> None:
    """Delete a catalog of `environment`; `default`'s of that name is then inherited.

    The data a catalog points at is left alone: Tower only forgets how to reach it.
    """
    with ctx.sessions.begin() as session:
        catalog = _find(session, principal, name, environment, lock=True)
        if catalog is None:
            raise _missing_for_write(session, principal, name, environment)
        # Children explicitly: SQLite cascades only while its foreign keys are on.
        session.execute(
            delete(models.CatalogProperty).where(models.CatalogProperty.catalog_id == catalog.id)
        )
        session.delete(catalog)
        audit.record(
            session, principal, "catalog.delete", f"catalogs/{name}", environment=environment
        )


def export_catalogs(
    ctx: ServerContext,
    principal: Principal,
    selection: CatalogSelection,
    public_key_pem: str,
    *,
    page: int,
    page_size: int,
) -> tuple[list[ExportedCatalog], int]:
    """One page of the selected catalogs with every value encrypted to `public_key_pem`
    (the derived pyiceberg properties too, so a local run gets what a remote one gets),
    and how many catalogs the whole selection holds."""
    inherited.check_public_key(public_key_pem)
    with ctx.sessions.begin() as session:
        rows = _visible(session, principal, selection)
        selected = inherited.page_of(rows, page, page_size)
        props = _properties_of(session, [catalog.id for catalog, _ in selected])
        key = vault.account_key(ctx, session, principal.account_id)
        exported = [
            _export(key, catalog, env, props[catalog.id], public_key_pem)
            for catalog, env in selected
        ]
        audit.record(
            session,
            principal,
            "catalog.export",
            "catalogs",
            environment=None if selection.all_environments else selection.environment,
            all_environments=selection.all_environments or None,
            names=[catalog.name for catalog, _env in selected],
        )
    return exported, len(rows)


def _export(
    key: bytes,
    catalog: models.Catalog,
    environment: str,
    props: Sequence[models.CatalogProperty],
    public_key_pem: str,
) -> ExportedCatalog:
    plain = {p.name: _open(key, p) for p in props}
    items = [
        ExportedProperty(
            name=p.name,
            preview=p.preview,
            environment_variable=_effective_variable(catalog, p),
            encrypted_value=vault.encrypt_for(public_key_pem, plain[p.name]),
        )
        for p in props
    ]
    for name, value in _derived(catalog.type, plain).items():
        items.append(
            ExportedProperty(
                name=name,
                preview=crypto.preview(value),
                environment_variable=rules.env_var_name(catalog.name, name),
                encrypted_value=vault.encrypt_for(public_key_pem, value),
                derived=True,
            )
        )
    return ExportedCatalog(
        name=catalog.name,
        environment=environment,
        type=catalog.type,
        created_at=catalog.created_at,
        properties=tuple(items),
    )


def _derived(type_: str, plain: dict[str, str]) -> dict[str, str]:
    """The pyiceberg properties computed from the stored ones and not stored themselves."""
    try:
        full = rules.pyiceberg_properties(type_, plain)
    except (errors.InvalidInput, KeyError):
        return {}
    return {name: value for name, value in full.items() if name not in plain}


def vend_credentials(
    ctx: ServerContext, principal: Principal, name: str, environment: str
) -> NoReturn:
    """Only tower.dev's hosted catalogs vend credentials; say so clearly for the rest."""
    view = describe_catalog(ctx, principal, name, environment)
    raise errors.InvalidInput(
        f"Catalog '{name}' is a '{view.type}' catalog: it does not vend credentials. Only "
        f"'{rules.TOWER_CATALOG}' catalogs (hosted by tower.dev) do, and this server hosts "
        "none. Apps reach this catalog with pyiceberg's load_catalog("
        f"'{name}'), configured from the PYICEBERG_CATALOG__* variables every run gets.",
        location="path.name",
        value=name,
    )


# ------------------------------------------------------------- the built-in catalog


def default_catalog(ctx: ServerContext, principal: Principal) -> CatalogView:
    """The account's `default` catalog in `default`, provisioned on first call."""
    with ctx.sessions.begin() as session:
        catalog = ensure_default_catalog(ctx, session, principal.account_id)
        return _views(session, [(catalog, DEFAULT_ENVIRONMENT)])[0]


def ensure_default_catalog(
    ctx: ServerContext, session: Session, account_id: uuid.UUID
) -> models.Catalog:
    """The account's catalog `default` of environment `default`, created if missing.

    Concurrent first calls race on the (environment, name) unique constraint; the
    loser's savepoint rolls back and it reads the winner's row.
    """
    env = _default_environment(session, account_id)
    existing = _default_catalog_row(session, env.id)
    if existing is not None:
        return existing
    values = _provision_default_storage(ctx, account_id)
    try:
        with session.begin_nested():
            catalog = models.Catalog(
                account_id=account_id,
                environment_id=env.id,
                name=rules.DEFAULT_CATALOG_NAME,
                type=rules.PYICEBERG_SQL,
            )
            session.add(catalog)
            session.flush()
            key = vault.account_key(ctx, session, account_id)
            _add_properties(session, key, catalog, _Opened(values=values))
            session.flush()
    except DatabaseIntegrityError:
        existing = _default_catalog_row(session, env.id)
        if existing is None:
            raise
        return existing
    return catalog


def _default_catalog_row(session: Session, environment_id: uuid.UUID) -> models.Catalog | None:
    return session.scalar(
        select(models.Catalog).where(
            models.Catalog.environment_id == environment_id,
            models.Catalog.name == rules.DEFAULT_CATALOG_NAME,
        )
    )


def _default_environment(session: Session, account_id: uuid.UUID) -> models.Environment:
    stmt = select(models.Environment).where(
        models.Environment.account_id == account_id,
        models.Environment.name == DEFAULT_ENVIRONMENT,
    )
    env = session.scalar(stmt)
    if env is not None:
        return env
    try:
        with session.begin_nested():
            env = models.Environment(account_id=account_id, name=DEFAULT_ENVIRONMENT)
            session.add(env)
            session.flush()
            return env
    except DatabaseIntegrityError:
        return session.scalars(stmt).one()


def _provision_default_storage(ctx: ServerContext, account_id: uuid.UUID) -> dict[str, str]:
    """Create the directories of the built-in catalog and return its properties."""
    home = ctx.settings.home_dir.resolve()
    root = home / "catalogs" / str(account_id)
    try:
        (root / "warehouse").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.TowerError(
            f"The built-in catalog's directory {root} could not be created ({exc}). Make "
            "TOWER_HOME writable for the Tower server."
        ) from exc
    return rules.default_catalog_properties(Path(home).as_posix(), str(account_id))


# ------------------------------------------------------------------------ for runs


def runtime_variables(
    ctx: ServerContext, session: Session, account_id: uuid.UUID, environment_id: uuid.UUID
) -> tuple[dict[str, str], list[str]]:
    """(environment variables, sensitive plaintexts to mask) for a run in
    `environment_id`: every catalog it sees, the built-in `default` one included.

    For the runner hand-out only, which seals the result to the runner's key; never
    put this in an API response.
    """
    seen = inherited.seen_by_run(session, models.Catalog, account_id, environment_id)
    if not _has_default_catalog(seen):
        # Provisioned on a run's first need (or again after a delete); once it exists,
        # the query above already shows it and the claim writes nothing here.
        try:
            ensure_default_catalog(ctx, session, account_id)
        except errors.TowerError as exc:
            # The run still gets every other catalog; only the built-in one is missing.
            logger.warning("built-in catalog unavailable for account %s: %s", account_id, exc)
        seen = inherited.seen_by_run(session, models.Catalog, account_id, environment_id)
    rows = sorted(seen, key=lambda row: row[0].name)
    props = _properties_of(session, [catalog.id for catalog, _ in rows])
    key = vault.account_key(ctx, session, account_id)
    variables: dict[str, str] = {}
    sensitive: list[str] = []
    for catalog, _env in rows:
        values = [
            rules.PropertyValue(p.name, _open(key, p), p.environment_variable)
            for p in props[catalog.id]
        ]
        catalog_vars, catalog_sensitive = rules.run_environment(catalog.name, catalog.type, values)
        variables.update(catalog_vars)
        sensitive.extend(v for v in catalog_sensitive if v not in sensitive)
    return variables, sensitive


def _has_default_catalog(seen: list[tuple[models.Catalog, str]]) -> bool:
    """Whether a run's catalogs include the built-in one of `default`. A run of another
    environment whose own catalog `default` hides it cannot tell: it checks the slow way."""
    return any(
        catalog.name == rules.DEFAULT_CATALOG_NAME and environment == DEFAULT_ENVIRONMENT
        for catalog, environment in seen
    )


def count_catalogs(session: Session, environment_id: uuid.UUID) -> int:
    """How many catalogs an environment holds itself (inherited ones not counted)."""
    return inherited.count_own(session, models.Catalog, environment_id)
