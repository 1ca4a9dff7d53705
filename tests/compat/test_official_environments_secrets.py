"""The official `tower` CLI's environments, secrets and `deploy --environment` against our server.

The CLI encrypts secret values to `GET /v1/secrets/key` itself, and `secrets list --show`
decrypts what `POST /v1/secrets/export` re-encrypted to its throwaway key, so these tests
also prove the hybrid wire format both ways.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from tests.compat.official import CliResult, OfficialCli
from tests.live import LiveTower

pytestmark = [
    pytest.mark.compat,
    pytest.mark.xdist_group("compat-environments"),
    pytest.mark.timeout(600),
]

APP = "compat-envs"
# The sleep keeps the run `running` past the official CLI's first status poll (contract §0.6).
APP_SOURCE = """\
import hashlib, os, time, tower
time.sleep(1.5)
print("ENV=" + tower.info.environment())
print("TOKEN=" + hashlib.sha256(os.environ.get("API_TOKEN", "").encode()).hexdigest()[:12])
print("LEAK=" + os.environ.get("API_TOKEN", ""))
"""
TOKEN = f"tok-{uuid.uuid4().hex}"


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, result.describe()
    return result


def test_environments_create_and_list(official_cli: OfficialCli) -> None:
    ok(official_cli("environments", "create", "-n", "staging"))
    listed = ok(official_cli("environments", "list")).stdout
    assert "default" in listed and "staging" in listed


def test_secrets_create_list_show_and_delete(
    official_cli: OfficialCli, compat_tower: LiveTower
) -> None:
    ok(official_cli("secrets", "create", "-n", "SHARED_NAME", "-v", "shared-value-1234"))
    ok(official_cli("secrets", "create", "-n", "API_TOKEN", "-v", TOKEN, "-e", "staging"))
    ok(official_cli("secrets", "create", "-n", "DOOMED", "-v", "short", "-e", "staging"))
    again = official_cli("secrets", "create", "-n", "DOOMED", "-v", "short", "-e", "staging")
    assert again.returncode != 0 and "exists" in again.output, again.describe()

    staging = ok(official_cli("secrets", "list", "-e", "staging")).stdout
    assert "API_TOKEN" in staging and "SHARED_NAME" in staging  # inherited from default
    assert f"XXXXXX{TOKEN[-4:]}" in staging and "XXXXXXXXXX" in staging
    assert TOKEN not in staging
    only_default = ok(official_cli("secrets", "list")).stdout
    assert "SHARED_NAME" in only_default and "API_TOKEN" not in only_default
    everything = ok(official_cli("secrets", "list", "--all")).stdout
    assert "API_TOKEN" in everything and "SHARED_NAME" in everything

    shown = ok(official_cli("secrets", "list", "--show", "-e", "staging")).stdout
    assert TOKEN in shown and "shared-value-1234" in shown

    ok(official_cli("secrets", "delete", "staging/DOOMED"))
    after = ok(official_cli("secrets", "list", "-e", "staging")).stdout
    assert "DOOMED" not in after and "API_TOKEN" in after


def test_deploy_to_one_environment_and_run_there_with_its_secret_masked(
    official_cli: OfficialCli, compat_tower: LiveTower, tmp_path: Path
) -> None:
    made = official_cli("secrets", "create", "-n", "API_TOKEN", "-v", TOKEN, "-e", "staging")
    assert made.returncode == 0 or "exists" in made.output, made.describe()
    app = tmp_path / APP
    app.mkdir()
    (app / "Towerfile").write_text(f'[app]\nname = "{APP}"\nscript = "./main.py"\n')
    (app / "main.py").write_text(APP_SOURCE)
    ok(official_cli("apps", "create", f"--name={APP}"))
    deployed = ok(official_cli("deploy", "--environment", "staging", cwd=app))
    assert "staging" in deployed.output
    with compat_tower.api() as api:
        pins = api.get(f"/apps/{APP}/environments").json()
    assert pins["environments"] == ["staging"], pins  # not default: only where it was sent

    ran = ok(official_cli("run", "--environment", "staging", cwd=app))
    assert "ENV=staging" in ran.stdout
    assert "TOKEN=" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12] in ran.stdout
    assert "LEAK=***" in ran.stdout and TOKEN not in ran.output


def test_environments_delete_after_confirming(official_cli: OfficialCli) -> None:
    ok(official_cli("environments", "create", "-n", "scratch"))
    prompt = "delete your scratch environment?"
    deleted = official_cli.confirming("environments", "delete", "-n", "scratch", prompt=prompt)
    assert deleted.returncode == 0 and "'scratch' deleted" in deleted.output, deleted.describe()
    assert "scratch" not in ok(official_cli("environments", "list")).stdout
    # The CLI reads `is_deletable: false` from describe and refuses before asking.
    refused = official_cli("environments", "delete", "-n", "default")
    assert "cannot delete the default environment" in refused.output, refused.describe()
    assert "default" in ok(official_cli("environments", "list")).stdout
