"""Catalog types, required properties, derived pyiceberg settings and the PYICEBERG_*
variables, checked against the real pyiceberg in a clean subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tower.core import catalogs
from tower.core.catalogs import PropertyValue
from tower.core.errors import InvalidInput

pytest.importorskip("pyiceberg")
pytest.importorskip("pyarrow")

TABLE_BUCKET = "arn:aws:s3tables:eu-central-1:123456789012:bucket/lake"
GLUE_WAREHOUSE = "123456789012:s3tablescatalog/lake"


def s3_tables(warehouse: str = TABLE_BUCKET, region: str = "eu-central-1") -> dict[str, str]:
    return {
        "access-key-id": "AKIAEXAMPLEKEY123",
        "secret-access-key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "warehouse": warehouse,
        "region": region,
    }


def python_with_only(env: dict[str, str], code: str, home: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose environment holds `env` and nothing of
    ours (HOME points at an empty directory, so no ~/.pyiceberg.yaml is read)."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pyiceberg_config(env: dict[str, str], slug: str, home: Path) -> dict[str, str]:
    """The properties pyiceberg's own config loader gives `load_catalog(slug)`."""
    code = (
        "import json\n"
        "from pyiceberg.utils.config import Config\n"
        f"print(json.dumps(Config().get_catalog_config({slug!r})))\n"
    )
    result = python_with_only(env, code, home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- types and required properties ----------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "required"),
    [
        ("apache-polaris", ("uri", "credential", "scope", "warehouse")),
        ("snowflake-open-catalog", ("uri", "credential", "scope", "warehouse")),
        ("lakekeeper", ("uri", "credential", "scope", "warehouse")),
        ("cloudflare-r2-catalog", ("uri", "warehouse", "token")),
        ("s3-tables", ("access-key-id", "secret-access-key", "warehouse", "region")),
        ("pyiceberg-sql", ("uri", "warehouse")),
    ],
)
def test_required_properties_per_type(type_name: str, required: tuple[str, ...]) -> None:
    assert catalogs.catalog_type(type_name).required == required
    complete = dict.fromkeys(required, "x")
    if type_name == "s3-tables":
        complete = s3_tables()
    catalogs.validate_properties(type_name, complete)
    for missing in required:
        partial = {k: v for k, v in complete.items() if k != missing}
        with pytest.raises(InvalidInput) as info:
            catalogs.validate_properties(type_name, partial)
        assert f"missing: {missing}" in info.value.message
        assert ", ".join(required) in info.value.message


def test_blank_required_property_counts_as_missing() -> None:
    with pytest.raises(InvalidInput, match="missing: uri"):
        catalogs.validate_properties("pyiceberg-sql", {"uri": "  ", "warehouse": "file:///w"})


def test_unknown_type_names_every_type_and_its_properties() -> None:
    with pytest.raises(InvalidInput) as info:
        catalogs.catalog_type("glue")
    assert "Unknown catalog type 'glue'" in info.value.message
    assert "cloudflare-r2-catalog (uri, warehouse, token)" in info.value.message
    assert info.value.location == "body.type"


def test_tower_catalog_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInput) as info:
        catalogs.catalog_type("tower-catalog")
    assert "no hosted Iceberg catalog" in info.value.message


def test_sensitive_properties() -> None:
    for name in ("credential", "token", "secret-access-key", "access-key-id"):
        assert catalogs.is_sensitive(name), name
    for name in ("client.secret-access-key", "s3.access-key-id", "adls.client-secret"):
        assert catalogs.is_sensitive(name), name
    for name in ("uri", "warehouse", "scope", "region", "rest.signing-name"):
        assert not catalogs.is_sensitive(name), name


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["default", "mycatalog", "my-catalog", "lake-2-prod", "a"])
def test_expressible_slugs_are_accepted(slug: str) -> None:
    assert catalogs.validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["my_catalog", "My-Catalog", "my.catalog", "my--catalog", "-lake", "lake-", "", "a b"]
)
def test_slugs_pyiceberg_cannot_read_back_are_refused(slug: str) -> None:
    with pytest.raises(InvalidInput) as info:
        catalogs.validate_slug(slug)
    assert info.value.location == "body.name"


def test_refused_slug_suggests_a_fix() -> None:
    with pytest.raises(InvalidInput, match=r"e\.g\. 'my-catalog'"):
        catalogs.validate_slug("My_Catalog")


@pytest.mark.parametrize("name", ["uri", "rest.sigv4-enabled", "s3.access-key-id", "header.x-a"])
def test_expressible_property_names(name: str) -> None:
    assert catalogs.validate_property_name(name) == name


@pytest.mark.parametrize("name", ["my_prop", "URI", "a--b", "a-.b", "a..b", ".a", "a."])
def test_property_names_pyiceberg_would_misread_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="environment_variable"):
        catalogs.validate_property_name(name)


def test_a_property_with_its_own_variable_may_have_any_plain_name() -> None:
    assert catalogs.validate_property_name("AWS_REGION", "AWS_REGION") == "AWS_REGION"


@pytest.mark.parametrize("name", ["TOWER_URL", "tower__runtime__x", "PYICEBERG_CATALOG__X__URI"])
def test_reserved_environment_variables_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        catalogs.validate_environment_variable(name)


def test_invalid_environment_variable_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not valid"):
        catalogs.validate_environment_variable("1BAD-NAME")


def test_env_var_names() -> None:
    assert catalogs.env_var_name("default", "uri") == "PYICEBERG_CATALOG__DEFAULT__URI"
    assert (
        catalogs.env_var_name("my-lake", "rest.sigv4-enabled")
        == "PYICEBERG_CATALOG__MY_LAKE__REST__SIGV4_ENABLED"
    )


# -- derivation -------------------------------------------------------------------------


def test_s3_tables_bucket_arn_uses_the_s3_tables_endpoint() -> None:
    derived = catalogs.pyiceberg_properties("s3-tables", s3_tables())
    assert derived["type"] == "rest"
    assert derived["uri"] == "https://s3tables.eu-central-1.amazonaws.com/iceberg"
    assert derived["warehouse"] == TABLE_BUCKET
    assert derived["rest.sigv4-enabled"] == "true"
    assert derived["rest.signing-name"] == "s3tables"
    assert derived["rest.signing-region"] == "eu-central-1"
    # What pyiceberg's REST SigV4 adapter reads (pyiceberg.io AWS_* = client.*) ...
    assert derived["client.access-key-id"] == "AKIAEXAMPLEKEY123"
    assert derived["client.secret-access-key"] == s3_tables()["secret-access-key"]
    assert derived["client.region"] == "eu-central-1"
    # ... and what its FileIO reads for the data files.
    assert derived["s3.access-key-id"] == "AKIAEXAMPLEKEY123"
    assert derived["s3.secret-access-key"] == s3_tables()["secret-access-key"]
    assert derived["s3.region"] == "eu-central-1"


def test_s3_tables_glue_warehouse_uses_the_glue_endpoint() -> None:
    derived = catalogs.pyiceberg_properties("s3-tables", s3_tables(GLUE_WAREHOUSE, "us-east-1"))
    assert derived["uri"] == "https://glue.us-east-1.amazonaws.com/iceberg"
    assert derived["rest.signing-name"] == "glue"
    assert derived["rest.signing-region"] == "us-east-1"
    assert derived["warehouse"] == GLUE_WAREHOUSE


def test_the_property_names_we_derive_are_the_ones_pyiceberg_reads() -> None:
    from pyiceberg.catalog import rest
    from pyiceberg.io import (
        AWS_ACCESS_KEY_ID,
        AWS_REGION,
        AWS_SECRET_ACCESS_KEY,
        S3_ACCESS_KEY_ID,
        S3_REGION,
        S3_SECRET_ACCESS_KEY,
    )

    derived = catalogs.pyiceberg_properties("s3-tables", s3_tables())
    for name in (
        rest.SIGV4,
        rest.SIGV4_REGION,
        rest.SIGV4_SERVICE,
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        AWS_REGION,
        S3_ACCESS_KEY_ID,
        S3_SECRET_ACCESS_KEY,
        S3_REGION,
    ):
        assert name in derived, name


@pytest.mark.parametrize(
    ("warehouse", "region", "problem"),
    [
        ("s3://my-bucket", "eu-central-1", "not recognised"),
        (TABLE_BUCKET, "us-east-1", "make them the same"),
        (TABLE_BUCKET, "Frankfurt", "not an AWS region"),
    ],
)
def test_s3_tables_bad_warehouse_or_region(warehouse: str, region: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        catalogs.validate_properties("s3-tables", s3_tables(warehouse, region))


def test_user_properties_win_over_derived_ones() -> None:
    props = s3_tables() | {"uri": "https://private.example/iceberg"}
    assert catalogs.pyiceberg_properties("s3-tables", props)["uri"] == (
        "https://private.example/iceberg"
    )


def test_rest_types_load_as_rest_and_the_sql_type_as_sql() -> None:
    assert catalogs.pyiceberg_properties("lakekeeper", {"uri": "https://x"})["type"] == "rest"
    assert catalogs.pyiceberg_properties("pyiceberg-sql", {"uri": "sqlite://"})["type"] == "sql"


def test_default_catalog_properties() -> None:
    props = catalogs.default_catalog_properties("/srv/tower", "acc-1")
    assert props == {
        "uri": "sqlite:////srv/tower/catalogs/acc-1/catalog.db",
        "warehouse": "file:///srv/tower/catalogs/acc-1/warehouse",
    }


# -- the run environment, read back by the real pyiceberg ---------------------------------


def test_run_environment_masks_only_sensitive_values() -> None:
    props = [PropertyValue(k, v) for k, v in s3_tables().items()]
    _variables, sensitive = catalogs.run_environment("lake", "s3-tables", props)
    assert sorted(sensitive) == sorted(
        ["AKIAEXAMPLEKEY123", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
    )


def test_own_environment_variable_replaces_the_pyiceberg_name() -> None:
    props = [
        PropertyValue("uri", "https://lake.example/catalog"),
        PropertyValue("credential", "id:secret-value", environment_variable="LAKE_CREDENTIAL"),
        PropertyValue("scope", "PRINCIPAL_ROLE:ALL"),
        PropertyValue("warehouse", "wh"),
    ]
    variables, sensitive = catalogs.run_environment("lake", "lakekeeper", props)
    assert variables["LAKE_CREDENTIAL"] == "id:secret-value"
    assert "PYICEBERG_CATALOG__LAKE__CREDENTIAL" not in variables
    assert variables["PYICEBERG_CATALOG__LAKE__URI"] == "https://lake.example/catalog"
    assert sensitive == ["id:secret-value"]


def test_pyiceberg_reads_back_exactly_the_s3_tables_properties(tmp_path: Path) -> None:
    props = [PropertyValue(k, v) for k, v in s3_tables().items()]
    variables, _ = catalogs.run_environment("s3-lake-1", "s3-tables", props)
    expected = catalogs.pyiceberg_properties("s3-tables", s3_tables())
    assert pyiceberg_config(variables, "s3-lake-1", tmp_path) == expected


def test_pyiceberg_reads_back_every_expressible_name(tmp_path: Path) -> None:
    """Dotted names, '-' in slugs and properties, several catalogs side by side."""
    first = {
        "uri": "https://a.example/api/catalog",
        "credential": "client:secret",
        "scope": "PRINCIPAL_ROLE:ALL",
        "warehouse": "wh",
        "header.x-iceberg-access-delegation": "vended-credentials",
        "rest.sigv4.max-retries": "3",
    }
    second = {"uri": "sqlite:////tmp/x.db", "warehouse": "file:///tmp/x"}
    variables: dict[str, str] = {}
    for slug, type_name, props in (
        ("polaris-prod", "apache-polaris", first),
        ("default", "pyiceberg-sql", second),
    ):
        values = [PropertyValue(k, v) for k, v in props.items()]
        variables.update(catalogs.run_environment(slug, type_name, values)[0])
    assert pyiceberg_config(variables, "polaris-prod", tmp_path) == {"type": "rest", **first}
    assert pyiceberg_config(variables, "default", tmp_path) == {"type": "sql", **second}


ROUND_TRIP = """
import pyarrow as pa
from pyiceberg.catalog import load_catalog

catalog = load_catalog({slug!r})
catalog.create_namespace_if_not_exists("sales")
table = catalog.create_table_if_not_exists(
    "sales.orders", pa.schema([("id", pa.int64()), ("item", pa.string())])
)
table.append(pa.table({{"id": [1, 2], "item": ["tea", "cake"]}}))
again = load_catalog({slug!r}).load_table("sales.orders")
print(type(catalog).__name__, again.scan().to_arrow().sort_by("id").to_pydict())
"""


@pytest.mark.parametrize("slug", ["default", "dev-lake"])
def test_load_catalog_round_trip_with_only_our_variables(tmp_path: Path, slug: str) -> None:
    """The built-in catalog's form (SQLite + local warehouse), loaded by slug."""
    root = tmp_path / "catalogs" / "acc-1"
    (root / "warehouse").mkdir(parents=True)
    props = catalogs.default_catalog_properties(tmp_path.as_posix(), "acc-1")
    values = [PropertyValue(k, v) for k, v in props.items()]
    variables, _ = catalogs.run_environment(slug, "pyiceberg-sql", values)
    assert all(name.startswith("PYICEBERG_CATALOG__") for name in variables)

    result = python_with_only(variables, ROUND_TRIP.format(slug=slug), tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SqlCatalog {'id': [1, 2], 'item': ['tea', 'cake']}"
    assert (root / "catalog.db").is_file()
    assert any((root / "warehouse").rglob("*.parquet"))


def test_a_password_inside_a_uri_is_masked() -> None:
    props = [
        PropertyValue("uri", "postgresql+psycopg://tower:pg-pass-8812@db.internal/iceberg"),
        PropertyValue("warehouse", "s3://lake/warehouse"),
    ]
    variables, sensitive = catalogs.run_environment("pg", "pyiceberg-sql", props)
    assert sensitive == ["pg-pass-8812"]
    assert variables["PYICEBERG_CATALOG__PG__URI"].endswith("@db.internal/iceberg")
