"""Iceberg catalogs: the types Tower knows, what each needs, and how a run sees them.

Pure (no I/O). A catalog is a slug, a type and named string properties. A run gets
each catalog as environment variables that `pyiceberg.catalog.load_catalog(slug)`
reads: ``PYICEBERG_CATALOG__<SLUG>__<PROPERTY>``.

How pyiceberg decodes those variables (pyiceberg/utils/config.py) decides what can be
expressed: it lower-cases the variable, drops ``pyiceberg_``, splits the rest on
``__`` at most twice (``catalog``, the catalog name, the property) and then, in each
part, turns ``__`` into ``.`` and every remaining ``_`` into ``-``. So:

* a slug may hold ``-`` (written ``_``) but never ``_``, ``.``, ``--``, nor start or
  end with ``-``; `load_catalog` lower-cases the name it looks up, so slugs are
  lower-case too;
* a property may hold ``.`` (written ``__``) and single ``-`` (written ``_``) between
  lower-case letters and digits (``rest.sigv4-enabled`` → ``REST__SIGV4_ENABLED``);
  ``_``, ``--`` and ``-.`` would decode to something else.

Names outside those rules are refused when a catalog is written, so every stored
catalog loads with exactly its properties.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from tower.core.errors import InvalidInput

ENV_PREFIX = "PYICEBERG_CATALOG__"
#: the catalog `tower.tables()` and `load_catalog()` use when no name is given
DEFAULT_CATALOG_NAME = "default"
#: tower.dev's hosted catalog; this server has no hosted Iceberg REST catalog
TOWER_CATALOG = "tower-catalog"
PYICEBERG_SQL = "pyiceberg-sql"
S3_TABLES = "s3-tables"

SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG_LENGTH = 128
PROPERTY_PATTERN = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")
#: names a property given its own `environment_variable` may have (it is only a label)
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_PROPERTY_NAME_LENGTH = 128
ENV_VAR_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VAR_LENGTH = 256
#: variables the runtime owns: a catalog property must never replace them
RESERVED_ENV_PREFIXES = ("TOWER_", "PYICEBERG_")

#: properties whose values are credentials: never shown, masked in run logs
SENSITIVE_PROPERTIES = frozenset(
    {
        "credential",
        "token",
        "access-key-id",
        "secret-access-key",
        "session-token",
        "password",
        "client.access-key-id",
        "client.secret-access-key",
        "client.session-token",
        "s3.access-key-id",
        "s3.secret-access-key",
        "s3.session-token",
    }
)
#: words that make any other property name sensitive too (e.g. `adls.client-secret`)
_SENSITIVE_WORDS = ("secret", "password", "token", "credential")

AWS_REGION_PATTERN = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
#: an S3 Tables table bucket: arn:aws:s3tables:<region>:<account>:bucket/<name>
TABLE_BUCKET_ARN = re.compile(
    r"^arn:aws[a-z-]*:s3tables:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):bucket/[a-z0-9-]+$"
)
#: the Glue Data Catalog's view of S3 Tables: <account>:s3tablescatalog/<bucket>
GLUE_WAREHOUSE = re.compile(r"^\d{12}:s3tablescatalog/[a-z0-9-]+$")


@dataclass(frozen=True, slots=True)
class CatalogType:
    """A kind of Iceberg catalog: what a user must give, shown with its label."""

    name: str
    label: str
    required: tuple[str, ...]


REST_OAUTH = ("uri", "credential", "scope", "warehouse")

CATALOG_TYPES: dict[str, CatalogType] = {
    t.name: t
    for t in (
        CatalogType("apache-polaris", "Apache Polaris", REST_OAUTH),
        CatalogType("snowflake-open-catalog", "Snowflake Open Catalog", REST_OAUTH),
        CatalogType("lakekeeper", "Lakekeeper", REST_OAUTH),
        CatalogType(
            "cloudflare-r2-catalog", "Cloudflare R2 Catalog", ("uri", "warehouse", "token")
        ),
        CatalogType(
            S3_TABLES, "S3 Tables", ("access-key-id", "secret-access-key", "warehouse", "region")
        ),
        CatalogType(PYICEBERG_SQL, "pyiceberg SQL catalog", ("uri", "warehouse")),
    )
}


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """A property as a run receives it: its plaintext and, maybe, its own variable."""

    name: str
    value: str
    environment_variable: str = ""


# ------------------------------------------------------------------------ validation


def catalog_type(name: str) -> CatalogType:
    """The type called `name`; InvalidInput naming the choices for anything else."""
    if name == TOWER_CATALOG:
        raise InvalidInput(
            "Catalogs of type 'tower-catalog' are hosted by tower.dev; this server has no "
            f"hosted Iceberg catalog. Use one of: {', '.join(CATALOG_TYPES)} (the built-in "
            f"'{DEFAULT_CATALOG_NAME}' catalog is a '{PYICEBERG_SQL}' catalog).",
            location="body.type",
            value=name,
        )
    found = CATALOG_TYPES.get(name)
    if found is None:
        raise InvalidInput(
            f"Unknown catalog type {name!r}. Use one of: {describe_types()}.",
            location="body.type",
            value=name,
        )
    return found


def describe_types() -> str:
    """`type (required, ...)` for every type, for error messages and help text."""
    return "; ".join(f"{t.name} ({', '.join(t.required)})" for t in CATALOG_TYPES.values())


def validate_slug(slug: str) -> str:
    """A catalog name pyiceberg can find through environment variables, or InvalidInput."""
    if len(slug or "") <= MAX_SLUG_LENGTH and SLUG_PATTERN.match(slug or ""):
        return slug
    suggestion = _suggest_slug(slug or "")
    hint = f" (e.g. '{suggestion}')" if suggestion and suggestion != slug else ""
    raise InvalidInput(
        f"Catalog name {slug!r} is not valid: use lower-case letters and digits, optionally "
        f"joined by single '-'{hint}, at most {MAX_SLUG_LENGTH} characters. Apps load it "
        "with pyiceberg's load_catalog(name) through PYICEBERG_CATALOG__<NAME>__* variables, "
        "which cannot carry '_', '.' or upper case in a catalog name.",
        location="body.name",
        value=slug,
    )


def _suggest_slug(slug: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", slug.lower())).strip("-")


def validate_environment_variable(name: str) -> str:
    """A property's own variable name: a plain, non-reserved environment variable."""
    if not name:
        return ""
    if len(name) > MAX_ENV_VAR_LENGTH or not ENV_VAR_PATTERN.match(name):
        raise InvalidInput(
            f"Environment variable name {name!r} is not valid: use letters, digits and '_', "
            "not starting with a digit (e.g. 'AWS_REGION').",
            location="body.properties.environment_variable",
            value=name,
        )
    if name.upper().startswith(RESERVED_ENV_PREFIXES):
        raise InvalidInput(
            f"Environment variable {name!r} is reserved: variables starting with "
            f"{' or '.join(RESERVED_ENV_PREFIXES)} belong to the Tower runtime and pyiceberg. "
            "Leave environment_variable empty to use PYICEBERG_CATALOG__<NAME>__<PROPERTY>.",
            location="body.properties.environment_variable",
            value=name,
        )
    return name


def validate_property_name(name: str, environment_variable: str = "") -> str:
    """A property name that survives the trip through PYICEBERG_* variables.

    With its own `environment_variable` the name is only a label, so it is freer.
    """
    if len(name or "") > MAX_PROPERTY_NAME_LENGTH:
        raise InvalidInput(
            f"Property name {name[:40]!r}… is longer than {MAX_PROPERTY_NAME_LENGTH} characters.",
            location="body.properties.name",
        )
    if environment_variable:
        if LABEL_PATTERN.match(name or ""):
            return name
        raise InvalidInput(
            f"Property name {name!r} is not valid: use letters, digits, '_', '.' or '-'.",
            location="body.properties.name",
            value=name,
        )
    if PROPERTY_PATTERN.match(name or ""):
        return name
    raise InvalidInput(
        f"Property name {name!r} is not valid: use pyiceberg's lower-case names, words of "
        "letters and digits joined by single '.' or '-' (e.g. 'uri', 'rest.sigv4-enabled'). "
        "Names with '_', '--' or upper case cannot be passed to pyiceberg as "
        "PYICEBERG_CATALOG__* variables; give the property its own environment_variable "
        "instead.",
        location="body.properties.name",
        value=name,
    )


def validate_properties(type_name: str, properties: Mapping[str, str]) -> None:
    """Every required property present and non-empty, and type-specific values sane."""
    kind = catalog_type(type_name)
    missing = [name for name in kind.required if not (properties.get(name) or "").strip()]
    if missing:
        raise InvalidInput(
            f"A '{kind.name}' catalog needs the properties {', '.join(kind.required)}; "
            f"missing: {', '.join(missing)}.",
            location="body.properties",
            value=missing,
        )
    if kind.name == S3_TABLES:
        _s3_tables_endpoint(properties["region"].strip(), properties["warehouse"].strip())


def is_sensitive(name: str) -> bool:
    """Whether a property's value is a credential (runs mask it in their logs)."""
    lowered = name.lower()
    return lowered in SENSITIVE_PROPERTIES or any(w in lowered for w in _SENSITIVE_WORDS)


# ------------------------------------------------------------------------ derivation


def pyiceberg_properties(type_name: str, properties: Mapping[str, str]) -> dict[str, str]:
    """The properties pyiceberg needs for this catalog: derived ones plus the user's.

    The user's own properties win over derived ones of the same name, so a custom
    `uri` (e.g. a private endpoint) still applies.
    """
    derived: dict[str, str] = {"type": "sql" if type_name == PYICEBERG_SQL else "rest"}
    if type_name == S3_TABLES:
        derived.update(s3_tables_properties(properties))
    return derived | dict(properties)


def s3_tables_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The REST settings for S3 Tables, from the region, keys and warehouse.

    Property names are the ones pyiceberg reads: the REST catalog signs with SigV4 from
    `client.*` credentials and `rest.signing-*`; its FileIO reads `s3.*` (falling back to
    `client.*` only in newer releases, so both are set).
    """
    region = properties["region"].strip()
    warehouse = properties["warehouse"].strip()
    uri, signing_name = _s3_tables_endpoint(region, warehouse)
    access_key_id = properties["access-key-id"]
    secret_access_key = properties["secret-access-key"]
    return {
        "type": "rest",
        "uri": uri,
        "warehouse": warehouse,
        "rest.sigv4-enabled": "true",
        "rest.signing-name": signing_name,
        "rest.signing-region": region,
        "client.region": region,
        "client.access-key-id": access_key_id,
        "client.secret-access-key": secret_access_key,
        "s3.region": region,
        "s3.access-key-id": access_key_id,
        "s3.secret-access-key": secret_access_key,
    }


def _s3_tables_endpoint(region: str, warehouse: str) -> tuple[str, str]:
    """(REST uri, SigV4 signing name) for an S3 Tables warehouse in `region`."""
    if not AWS_REGION_PATTERN.match(region):
        raise InvalidInput(
            f"Region {region!r} is not an AWS region name (e.g. 'us-east-1').",
            location="body.properties.region",
            value=region,
        )
    arn = TABLE_BUCKET_ARN.match(warehouse)
    if arn:
        if arn.group("region") != region:
            raise InvalidInput(
                f"The table bucket ARN is in region '{arn.group('region')}' but the region "
                f"property is '{region}'; make them the same.",
                location="body.properties.region",
                value=region,
            )
        return f"https://s3tables.{region}.amazonaws.com/iceberg", "s3tables"
    if GLUE_WAREHOUSE.match(warehouse):
        return f"https://glue.{region}.amazonaws.com/iceberg", "glue"
    raise InvalidInput(
        f"S3 Tables warehouse {warehouse!r} is not recognised: use the table bucket ARN "
        "(arn:aws:s3tables:<region>:<account-id>:bucket/<bucket>) for the S3 Tables "
        "endpoint, or '<account-id>:s3tablescatalog/<bucket>' for the AWS Glue endpoint.",
        location="body.properties.warehouse",
        value=warehouse,
    )


# ------------------------------------------------------------------- run environment


def env_var_name(slug: str, property_name: str) -> str:
    """``PYICEBERG_CATALOG__<SLUG>__<PROPERTY>`` that pyiceberg decodes back exactly.

    `.` → `__` and `-` → `_` (see the module docstring); both names must be valid.
    """
    return f"{ENV_PREFIX}{_encode(slug)}__{_encode(property_name)}"


def _encode(part: str) -> str:
    return part.replace(".", "__").replace("-", "_").upper()


def run_environment(
    slug: str, type_name: str, properties: Iterable[PropertyValue]
) -> tuple[dict[str, str], list[str]]:
    """(variables, sensitive values) that make `load_catalog(slug)` see this catalog.

    A stored property with its own `environment_variable` goes out under that name
    only (as on tower.dev); every other property pyiceberg needs, derived ones
    included, goes out as PYICEBERG_CATALOG__<SLUG>__<PROPERTY>.
    """
    props = list(properties)
    own_names = {p.name: p.environment_variable for p in props if p.environment_variable}
    plain = {p.name: p.value for p in props}
    loadable = _loadable(type_name, plain)
    variables = {own_names[p.name]: p.value for p in props if p.name in own_names}
    for name, value in loadable.items():
        if name not in own_names:
            variables[env_var_name(slug, name)] = value
    sensitive: list[str] = []
    for name, value in (plain | loadable).items():
        secret = value if is_sensitive(name) else _uri_password(value)
        if secret and secret not in sensitive:
            sensitive.append(secret)
    return variables, sensitive


def _uri_password(value: str) -> str | None:
    """The password inside a URL such as `postgresql://user:pw@host/db`, if any."""
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def _loadable(type_name: str, plain: Mapping[str, str]) -> dict[str, str]:
    """pyiceberg_properties, tolerating a catalog stored before its type's rules tightened."""
    try:
        return pyiceberg_properties(type_name, plain)
    except (InvalidInput, KeyError):
        return dict(plain)


# --------------------------------------------------------------- the built-in catalog


def default_catalog_properties(home_dir: PurePosixPath | str, account_id: str) -> dict[str, str]:
    """The built-in `default` catalog: a pyiceberg SQL catalog on SQLite in TOWER_HOME."""
    root = PurePosixPath(home_dir) / "catalogs" / account_id
    return {
        "uri": f"sqlite:///{root / 'catalog.db'}",
        "warehouse": f"file://{root / 'warehouse'}",
    }
