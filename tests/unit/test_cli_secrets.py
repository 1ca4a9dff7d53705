"""`tower secrets ...` end to end against a fake Tower API that really does the crypto.

The fake holds its own RSA key: it decrypts what `create` sends and re-encrypts to the
key `list --show` sends, so the wire format is exercised both ways through the CLI,
the real TowerApi and httpx (only the server is replaced).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from tests.unit.cli_fakes import error, isolate_config, serve, tower

from tower.cli import secrets as secrets_module
from tower.core import crypto

CREATED_AT = "2025-01-01T00:00:00Z"


@dataclass
class FakeSecretsApi:
    """The secrets endpoints of a Tower server, in memory, with real encryption."""

    key: RSAPrivateKey = field(default_factory=crypto.generate_rsa_private_key)
    #: (environment, name) → plaintext, as a server would hold it after decrypting
    values: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: the most items one export page holds (a server may cap what the client asks)
    export_page_cap: int = 100

    def add(self, name: str, value: str, environment: str = "default") -> None:
        self.values[(environment, name)] = value

    def secret(self, environment: str, name: str) -> dict[str, Any]:
        value = self.values[(environment, name)]
        return {
            "name": name,
            "environment": environment,
            "preview": crypto.preview(value),
            "created_at": CREATED_AT,
        }

    def visible(self, environment: str, all_environments: bool) -> list[tuple[str, str]]:
        """(environment, name) a run in `environment` gets, sorted by name."""
        if all_environments:
            keys = list(self.values)
        else:
            chosen: dict[str, tuple[str, str]] = {}
            for env, name in self.values:
                if env == environment or (env == "default" and name not in chosen):
                    chosen[name] = (env, name)
            keys = list(chosen.values())
        return sorted(keys, key=lambda k: (k[1], k[0]))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path.removeprefix("/v1"), request.method
        if (method, path) == ("GET", "/secrets/key"):
            return httpx.Response(200, json={"public_key": crypto.public_key_pem_pkcs1(self.key)})
        if (method, path) == ("POST", "/secrets"):
            return self.create(json.loads(request.content))
        if (method, path) == ("GET", "/secrets"):
            params = request.url.params
            keys = self.visible(params["environment"], params["all"] == "true")
            pages = {"page": 0, "page_size": len(keys), "num_pages": 1, "total": len(keys)}
            return httpx.Response(
                200, json={"secrets": [self.secret(*k) for k in keys], "pages": pages}
            )
        if (method, path) == ("POST", "/secrets/export"):
            return self.export(json.loads(request.content))
        match = re.fullmatch(r"/secrets/(.+)", path)
        if method == "DELETE" and match:
            return self.delete(match.group(1), request.url.params["environment"])
        return error(404, f"No route {method} {path}")

    def create(self, body: dict[str, Any]) -> httpx.Response:
        key = (body["environment"], body["name"])
        if key in self.values:
            return error(409, f"Secret '{body['name']}' already exists.")
        try:
            self.values[key] = crypto.hybrid_decrypt(self.key, body["encrypted_value"])
        except crypto.IntegrityError as exc:
            return error(400, exc.message)
        return httpx.Response(201, json={"secret": self.secret(*key)})

    def export(self, body: dict[str, Any]) -> httpx.Response:
        public_key = crypto.load_public_key(body["public_key"])
        keys = self.visible(body["environment"], body["all"])
        size = min(body["page_size"], self.export_page_cap)
        page = body["page"]
        selected = keys[(page - 1) * size : page * size]
        items = [
            {
                "name": name,
                "environment": env,
                "created_at": CREATED_AT,
                "encrypted_value": crypto.hybrid_encrypt(public_key, self.values[(env, name)]),
            }
            for env, name in selected
        ]
        num_pages = max(1, -(-len(keys) // size))
        pages = {"page": page, "page_size": size, "num_pages": num_pages, "total": len(keys)}
        return httpx.Response(200, json={"secrets": items, "pages": pages})

    def delete(self, name: str, environment: str) -> httpx.Response:
        if (environment, name) not in self.values:
            return error(404, f"Secret '{name}' was not found in environment '{environment}'.")
        body = {"secret": self.secret(environment, name)}
        del self.values[(environment, name)]
        return httpx.Response(200, json=body)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == "/v1" + path]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSecretsApi:
    isolate_config(tmp_path, monkeypatch)
    return serve(FakeSecretsApi(), monkeypatch)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


# ------------------------------------------------------------------------ create


def test_create_encrypts_to_the_server_key_and_the_server_gets_the_value(
    fake: FakeSecretsApi,
) -> None:
    value = "https://abc123.snowflake.com?pässword=s3cr3t"
    result = ok(tower("secrets", "create", "--name=snowflake_url", f"--value={value}"))
    assert 'Secret "snowflake_url" was created' in result.stdout
    assert fake.values == {("default", "snowflake_url"): value}
    [post] = fake.sent("POST", "/secrets")
    body = json.loads(post.content)
    assert set(body) == {"name", "environment", "encrypted_value", "preview"}
    assert body["environment"] == "default" and body["preview"] == "XXXXXXcr3t"
    assert value not in post.content.decode()
    assert len(fake.sent("GET", "/secrets/key")) == 1


@pytest.mark.parametrize(
    ("value", "preview"),
    [("", "XXXXXXXXXX"), ("0123456789", "XXXXXXXXXX"), ("0123456789A", "XXXXXX789A")],
)
def test_create_sends_the_documented_preview(
    fake: FakeSecretsApi, value: str, preview: str
) -> None:
    ok(tower("secrets", "create", "-n", "S", "-v", value, "-e", "production"))
    body = json.loads(fake.sent("POST", "/secrets")[0].content)
    assert body["preview"] == preview and body["environment"] == "production"
    assert fake.values == {("production", "S"): value}


def test_create_duplicate_reports_the_server_message(fake: FakeSecretsApi) -> None:
    fake.add("TOKEN", "old")
    result = tower("secrets", "create", "-n", "TOKEN", "-v", "new")
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "Traceback" not in result.output
    assert fake.values[("default", "TOKEN")] == "old"


def test_create_without_a_value_off_a_terminal_is_a_usage_error(fake: FakeSecretsApi) -> None:
    result = tower("secrets", "create", "-n", "TOKEN")
    assert result.exit_code == 2 and "--value" in result.output
    assert fake.requests == []


def test_create_prompts_for_a_hidden_value_at_a_terminal(
    fake: FakeSecretsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets_module, "stdin_is_tty", lambda: True)
    result = ok(tower("secrets", "create", "-n", "TOKEN", input="typed-secret\n"))
    assert "typed-secret" not in result.output  # hidden input is not echoed
    assert fake.values == {("default", "TOKEN"): "typed-secret"}


# ------------------------------------------------------------------------ list


def test_list_shows_previews_with_inheritance_and_never_values(fake: FakeSecretsApi) -> None:
    fake.add("s3_bucket", "my-data-bucket")
    fake.add("snowflake_url", "https://abc123.snowflake.com")
    fake.add("snowflake_url", "https://abc123-prod.snowflake.com", "production")
    result = ok(tower("secrets", "list", "--environment=production"))
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == ["Secret", "Environment", "Preview"]
    assert ["s3_bucket", "default", "XXXXXXcket"] in lines
    assert ["snowflake_url", "production", "XXXXXX.com"] in lines
    assert "snowflake.com" not in result.stdout and "my-data-bucket" not in result.stdout
    [request] = fake.sent("GET", "/secrets")
    assert dict(request.url.params) == {
        "page": "0",
        "page_size": "100",
        "environment": "production",
        "all": "false",
    }
    assert fake.sent("POST", "/secrets/export") == []  # no values asked for


def test_list_all_as_json(fake: FakeSecretsApi) -> None:
    fake.add("A", "value-a")
    fake.add("A", "value-a-prod", "production")
    result = ok(tower("secrets", "list", "-a", "--json"))
    rows = json.loads(result.stdout)
    assert [(r["name"], r["environment"]) for r in rows] == [
        ("A", "default"),
        ("A", "production"),
    ]
    assert fake.sent("GET", "/secrets")[0].url.params["all"] == "true"


def test_list_empty_says_so(fake: FakeSecretsApi) -> None:
    result = ok(tower("secrets", "list", "-e", "staging"))
    assert "No secrets found in environment 'staging'" in result.stdout


def test_list_show_decrypts_values_exported_to_a_fresh_key(fake: FakeSecretsApi) -> None:
    fake.add("s3_bucket", "my-data-bucket")
    fake.add("snowflake_url", "https://abc123.snowflake.com")
    fake.add("snowflake_url", "https://abc123-prod.snowflake.com", "production")
    result = ok(tower("secrets", "list", "--show", "-e", "production"))
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == ["Secret", "Environment", "Value"]
    assert ["s3_bucket", "default", "my-data-bucket"] in lines
    assert ["snowflake_url", "production", "https://abc123-prod.snowflake.com"] in lines
    assert "https://abc123.snowflake.com" not in result.stdout  # overridden in production
    [export] = fake.sent("POST", "/secrets/export")
    body = json.loads(export.content)
    assert body["public_key"].startswith("-----BEGIN PUBLIC KEY-----")  # SPKI, as specified
    assert crypto.load_public_key(body["public_key"]).key_size == 2048
    assert (body["environment"], body["all"], body["page"]) == ("production", False, 1)

    # A second run makes another key: nothing is reused or kept.
    ok(tower("secrets", "list", "--show", "-e", "production"))
    keys = [json.loads(r.content)["public_key"] for r in fake.sent("POST", "/secrets/export")]
    assert keys[0] != keys[1]


def test_list_show_fetches_every_export_page(fake: FakeSecretsApi) -> None:
    fake.export_page_cap = 2
    for index in range(5):
        fake.add(f"S{index}", f"value-{index}")
    result = ok(tower("secrets", "list", "--show", "--json"))
    rows = json.loads(result.stdout)
    assert {r["name"]: r["value"] for r in rows} == {f"S{i}": f"value-{i}" for i in range(5)}
    pages = [json.loads(r.content)["page"] for r in fake.sent("POST", "/secrets/export")]
    assert pages == [1, 2, 3]


# ------------------------------------------------------------------------ delete


def test_delete_by_name_and_environment(fake: FakeSecretsApi) -> None:
    fake.add("TOKEN", "d")
    fake.add("TOKEN", "s", "staging")
    result = ok(tower("secrets", "delete", "TOKEN", "-e", "staging"))
    assert 'Secret "TOKEN" was deleted from environment "staging"' in result.stdout
    assert fake.values == {("default", "TOKEN"): "d"}
    ok(tower("secrets", "delete", "TOKEN"))
    assert fake.values == {}


def test_delete_env_slash_name_wins_over_the_option(fake: FakeSecretsApi) -> None:
    fake.add("dlt.destination.password", "p", "production")
    ok(tower("secrets", "delete", "production/dlt.destination.password", "-e", "staging"))
    [request] = fake.sent("DELETE", "/secrets/dlt.destination.password")
    assert request.url.params["environment"] == "production"
    assert fake.values == {}


def test_delete_missing_reports_404_message(fake: FakeSecretsApi) -> None:
    result = tower("secrets", "delete", "NOPE")
    assert result.exit_code == 1
    assert "Secret 'NOPE' was not found in environment 'default'" in result.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("TOKEN", ("TOKEN", "opt")),
        ("prod/TOKEN", ("TOKEN", "prod")),
        ("prod/a/b", ("a/b", "prod")),
        ("/TOKEN", ("/TOKEN", "opt")),
        ("prod/", ("prod/", "opt")),
    ],
)
def test_split_qualified_name(given: str, expected: tuple[str, str]) -> None:
    assert secrets_module.split_qualified_name(given, "opt") == expected
