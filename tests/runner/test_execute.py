"""execute() end to end: real packages, real uv, real processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import Sink, alive, wait_until

from tower.core.runs import RunStatus
from tower.runner.environment import RunContext
from tower.runner.execute import Outcome, execute
from tower.runner.settings import run_parent_environment
from tower.runner.venvs import TEMP_PREFIX, VenvCache

pytestmark = pytest.mark.xdist_group("runner-uv")

APP = """\
import os, sys
import shared_helpers
print("hello", os.environ["friend"], shared_helpers.WHO)
print("to stderr", file=sys.stderr)
print("secret", os.environ.get("API_KEY"))
print("dlt", os.environ.get("DESTINATION__PASSWORD"))
print("leak", os.environ.get("SECRET_FROM_PARENT"))
print("run", os.environ.get("TOWER__RUNTIME__RUN_ID"), os.environ.get("TOWER_ENVIRONMENT"))
print("cwd", os.getcwd())
print("home", os.environ["HOME"])
import tower
print("sdk", tower.__file__)
"""


def run(
    package: tuple[Path, object],
    venvs: VenvCache,
    work: Path,
    ctx: RunContext | None = None,
    **kwargs: object,
) -> tuple[Outcome, Sink]:
    sink = Sink()
    package_dir, manifest = package
    outcome = execute(
        package_dir,
        manifest,  # type: ignore[arg-type]
        ctx or RunContext(),
        venvs,
        sink,
        work_dir=work,
        parent_env=run_parent_environment(),
        **kwargs,  # type: ignore[arg-type]
    )
    return outcome, sink


def test_no_deps_app(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET_FROM_PARENT", "hunter2")
    app = make_app(
        {"main.py": APP, "../shared_helpers/shared_helpers.py": "WHO = 'from a module'\n"},
        import_paths=["../shared_helpers"],
    )
    ctx = RunContext(
        environment="staging",
        run_id="r-1",
        parameters={"friend": "Ada"},
        secrets={"API_KEY": "s3cr3t", "dlt.destination.password": "pw"},
    )
    started: list[bool] = []
    package = extract(app)
    outcome, sink = run(
        package, venv_cache, tmp_path / "work", ctx, on_started=lambda _began: started.append(True)
    )
    program = sink.channel("program")
    assert (outcome.status, outcome.exit_code, outcome.message) == (RunStatus.EXITED, 0, None), (
        sink.lines
    )
    assert started == [True]
    assert "hello Ada from a module" in program
    assert "to stderr" in program
    assert "secret s3cr3t" in program
    assert "dlt pw" in program
    assert "leak None" in program
    assert "run r-1 staging" in program
    assert f"cwd {package[0] / 'app'}" in program
    assert f"home {tmp_path / 'work' / 'home'}" in program
    sdk = next(line for line in program if line.startswith("sdk "))
    assert str(venv_cache.root) in sdk, "the SDK must come from the venv, not the runner"
    assert sink.channel("setup"), "venv output goes to the setup channel"


def test_crash_and_shell_script(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    crash = make_app({"main.py": "print('bye')\nraise SystemExit(3)\n"})
    outcome, _ = run(extract(crash), venv_cache, tmp_path / "w1")
    assert (outcome.status, outcome.exit_code) == (RunStatus.CRASHED, 3)
    assert outcome.message == "The app exited with code 3."

    shell = make_app(
        {"run.sh": 'echo "shell says $friend"\npython -c "import sys; print(sys.prefix)"\n'},
        script="./run.sh",
    )
    ctx = RunContext(parameters={"friend": "Bob"})
    outcome, sink = run(extract(shell), venv_cache, tmp_path / "w2", ctx)
    assert outcome.status == RunStatus.EXITED, sink.lines
    program = sink.channel("program")
    assert program[0] == "shell says Bob"
    assert program[1].startswith(str(venv_cache.root)), "venv/bin is first on PATH"


def test_requirements_app_and_cache_hit(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    files = {"requirements.txt": "six==1.16.0\n", "main.py": "import six\nprint(six.__version__)\n"}
    package = extract(make_app(files))
    outcome, sink = run(package, venv_cache, tmp_path / "w1")
    assert outcome.status == RunStatus.EXITED, sink.lines
    assert sink.channel("program") == ["1.16.0"]
    venvs_before = sorted(p.name for p in venv_cache.root.iterdir())

    outcome, sink = run(extract(make_app(files)), venv_cache, tmp_path / "w2")
    assert outcome.status == RunStatus.EXITED
    assert outcome.venv_cache_hit is True
    assert sink.channel("program") == ["1.16.0"]
    assert any(
        line.startswith("Reusing the cached virtual environment") for line in sink.channel("setup")
    )
    assert sorted(p.name for p in venv_cache.root.iterdir()) == venvs_before
    venv = venv_cache.ensure(package[0] / "app", Sink())
    assert venv.cache_hit
    assert _compiled(venv.path, "six"), "the dependencies' bytecode is compiled at build"


def _compiled(venv: Path, module: str) -> bool:
    return any(venv.glob(f"lib/python*/site-packages/__pycache__/{module}.*.pyc"))


def test_pyproject_app(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    pyproject = (
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["six==1.16.0"]\n'
    )
    files = {"pyproject.toml": pyproject, "main.py": "import six, tower\nprint(six.__version__)\n"}
    package = extract(make_app(files))
    outcome, sink = run(package, venv_cache, tmp_path / "w")
    assert outcome.status == RunStatus.EXITED, sink.lines
    assert sink.channel("program") == ["1.16.0"]
    assert _compiled(venv_cache.ensure(package[0] / "app", Sink()).path, "six")


def test_broken_requirement(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    files = {"requirements.txt": "this-package-does-not-exist-xyz==1.0\n", "main.py": "print(1)\n"}
    package = extract(make_app(files))
    started: list[bool] = []
    outcome, sink = run(
        package, venv_cache, tmp_path / "w", on_started=lambda _began: started.append(True)
    )
    assert outcome.status == RunStatus.ERRORED
    assert outcome.exit_code is None
    assert outcome.message is not None
    assert "requirements.txt" in outcome.message
    assert "this-package-does-not-exist-xyz" in outcome.message
    setup = sink.channel("setup")
    assert any("this-package-does-not-exist-xyz" in line for line in setup[:-1]), "uv's own error"
    assert setup[-1] == outcome.message.splitlines()[0]
    assert not sink.channel("program")
    assert started == []
    key = venv_cache.key_for(package[0] / "app")
    assert not (venv_cache.root / key).exists()
    assert not list(venv_cache.root.glob(f"{TEMP_PREFIX}{key}-*"))


def test_cancel_terminates_the_app(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    app = make_app({"main.py": "import time\nprint('working', flush=True)\ntime.sleep(120)\n"})
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    outcome, sink = run(
        extract(app),
        venv_cache,
        tmp_path / "w",
        on_started=lambda _began: timer.start(),
        cancel=cancel,
        cancel_grace_s=5.0,
    )
    assert outcome.status == RunStatus.CANCELLED
    assert outcome.exit_code == 128 + 15
    assert sink.channel("program") == ["working"]


def test_concurrent_builds_of_one_key(venv_cache: VenvCache, tmp_path: Path) -> None:
    apps = []
    for name in ("a", "b"):
        app = tmp_path / name
        app.mkdir()
        (app / "requirements.txt").write_text("six==1.16.0  # concurrent build test\n")
        apps.append(app)
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda a=app: results.append(venv_cache.ensure(a, Sink()).cache_hit)
        )
        for app in apps
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == [False, True]
    key = venv_cache.key_for(apps[0])
    assert (venv_cache.root / key / "pyvenv.cfg").is_file()
    assert not list(venv_cache.root.glob(f"{TEMP_PREFIX}{key}-*"))


#: a local package whose in-tree build backend (no build requirements, so no index
#: is needed) writes its pid to a marker file and then takes two minutes
SLOW_PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "slowpkg"
version = "0.1"
"""
SLOW_BACKEND = """\
import os, time

def _hold(*args, **kwargs):
    with open({marker!r} + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.replace({marker!r} + ".tmp", {marker!r})
    time.sleep(120)
    raise SystemExit(1)

build_wheel = build_editable = _hold

def get_requires_for_build_wheel(config_settings=None):
    return []
"""


def test_cancel_during_the_venv_build_stops_uv_and_never_starts_the_app(
    make_app: Callable[..., Path],
    extract: Callable[[Path], tuple[Path, object]],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "building"
    app = make_app(
        {
            "requirements.txt": "./slowpkg\n",
            "slowpkg/pyproject.toml": SLOW_PYPROJECT,
            "slowpkg/backend.py": SLOW_BACKEND.format(marker=str(marker)),
            "main.py": "print('the app ran')\n",
        }
    )
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_once_uv_builds() -> None:
        wait_until(marker.exists, timeout=120)
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_once_uv_builds, daemon=True).start()
    started: list[bool] = []
    package = extract(app)
    outcome, sink = run(
        package,
        venv_cache,
        tmp_path / "w",
        on_started=lambda _began: started.append(True),
        cancel=cancel,
    )
    returned_after = time.monotonic() - cancelled_at[0]
    assert (outcome.status, outcome.message) == (
        RunStatus.CANCELLED,
        "The run was cancelled before it started.",
    )
    assert started == []
    assert sink.channel("program") == []
    assert any("slowpkg" in line for line in sink.channel("setup")), "uv was building it"
    assert returned_after < 5.0, "not after the two-minute build"
    wait_until(lambda: not alive(int(marker.read_text())))  # uv's build backend died too
    key = venv_cache.key_for(package[0] / "app")
    assert not (venv_cache.root / key).exists()
    assert not list(venv_cache.root.glob(f"{TEMP_PREFIX}{key}-*"))
