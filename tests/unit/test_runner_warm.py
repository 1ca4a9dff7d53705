"""What decides whether a pre-started interpreter may serve a run, and its bootstrap
run without a sandbox (a real interpreter, real pipes)."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

from tower.runner.environment import RunPaths, interpreter_environment
from tower.runner.sandbox import RunRequest
from tower.runner.venvs import Venv
from tower.runner.warm import (
    SDK_MODULES,
    WarmPool,
    WarmSpec,
    bootstrap_source,
    needs_exec,
    read_at_startup,
    sdk_modules,
    shadowed,
)
from tower.runner.workdirs import RunDirs


def test_startup_variables_are_those_python_and_the_linker_read() -> None:
    started = ["PYTHONHASHSEED", "PYTHONWARNINGS", "LD_PRELOAD", "LC_ALL", "LANG", "TZ"]
    assert all(read_at_startup(name) for name in started)
    later = ["PYTHONPATH", "API_KEY", "PATH", "HOME", "TOWER_URL", "PWD"]
    assert not any(read_at_startup(name) for name in later)


def test_a_run_needs_its_own_exec_when_a_variable_read_at_start_up_differs() -> None:
    started = {"HOME": "/slot/home", "LANG": "C.UTF-8"}
    assert needs_exec({"HOME": "/run/home", "LANG": "C.UTF-8", "API_KEY": "k"}, started) is None
    python = needs_exec({"LANG": "C.UTF-8", "PYTHONHASHSEED": "1"}, started)
    assert python == "the run sets PYTHONHASHSEED, which Python reads when it starts"
    assert needs_exec({}, started) == "the run sets LANG, which Python reads when it starts"
    # What the C library reads when any program starts: an interpreter that is already
    # running (warm, or forked from a template) would silently ignore it.
    for name in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "GCONV_PATH"):
        problem = needs_exec({**started, name: "2"}, started)
        assert problem == f"the run sets {name}, which the C library reads when a program starts"


def test_shadowed_names_the_modules_a_package_dir_would_provide(tmp_path: Path) -> None:
    (tmp_path / "http").mkdir()
    (tmp_path / "json.py").write_text("")
    (tmp_path / "ssl.cpython-311-x86_64-linux-gnu.so").write_text("")
    (tmp_path / "main.py").write_text("")
    modules = ["http", "json", "ssl", "tower", "email"]
    assert shadowed(modules, [tmp_path, tmp_path / "missing"]) == ["http", "json", "ssl"]


def test_the_pool_key_separates_venvs_and_requests(tmp_path: Path) -> None:
    venv = Venv(tmp_path / "v1", "v1", cache_hit=True)
    other = Venv(tmp_path / "v2", "v2", cache_hit=True)
    plain = WarmSpec(venv, RunRequest(), ())
    keys = {
        plain.key,
        WarmSpec(other, RunRequest(), ()).key,
        WarmSpec(venv, RunRequest(isolate_network=True), ()).key,
        WarmSpec(venv, RunRequest(limits={"memory_mb": 256}), ()).key,
    }
    assert len(keys) == 4
    assert WarmSpec(venv, RunRequest(limits={"a": 1, "b": 2}), ()).key == (
        WarmSpec(venv, RunRequest(limits={"b": 2, "a": 1}), ()).key
    )


def test_the_interpreter_environment_is_the_run_environment_without_the_run(
    tmp_path: Path,
) -> None:
    paths = RunPaths(tmp_path / "slot", (), tmp_path / "venv", tmp_path / "h", tmp_path / "t")
    env = interpreter_environment(paths, {"PATH": "/usr/bin", "LANG": "C.UTF-8", "X": "1"})
    assert env["HOME"] == str(tmp_path / "h") and env["TMPDIR"] == str(tmp_path / "t")
    assert env["PATH"] == f"{tmp_path / 'venv' / 'bin'}:/usr/bin"
    assert env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert "PYTHONPATH" not in env and "X" not in env


def test_the_bootstrap_becomes_the_run(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    script = app / "main.py"
    script.write_text(
        "import json, os, sys\n"
        "print(json.dumps([__name__, sys.argv, os.getcwd(), os.environ.get('K'),"
        " sys.path[:2], sorted(k for k in globals() if not k.startswith('__'))]))\n"
        "raise SystemExit(5)\n"
    )
    control_read, control_write = os.pipe()
    ready_read, ready_write = os.pipe()
    argv = [sys.executable, "-c", bootstrap_source(), str(control_read), str(ready_write), "email"]
    proc = subprocess.Popen(
        argv,
        pass_fds=(control_read, ready_write),
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={"PYTHONUNBUFFERED": "1"},
    )
    os.close(control_read)
    os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        modules = ready.readline().decode().split()
        assert "email" in modules and "json" not in modules
    run = {"env": {"K": "v", "PYTHONPATH": "/extra"}, "cwd": str(app), "argv": [str(script)]}
    with os.fdopen(control_write, "wb") as control:
        control.write(marshal.dumps(run))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 5
    name, seen_argv, cwd, value, path, names = json.loads(out)
    assert (name, seen_argv, cwd, value) == ("__main__", [str(script)], str(app), "v")
    assert path == [str(app), "/extra"]
    assert names == ["json", "os", "sys"], "nothing of the bootstrap is left in __main__"


MODULES_APP = "import sys\nprint(' '.join(sorted(sys.modules)))\n"


def _bootstrap() -> tuple[subprocess.Popen[bytes], int, int]:
    """A warm bootstrap with nothing to pre-import: (process, its control pipe's write
    end, its ready pipe's read end)."""
    control_read, control_write = os.pipe()
    ready_read, ready_write = os.pipe()
    argv = [sys.executable, "-c", bootstrap_source(), str(control_read), str(ready_write)]
    proc = subprocess.Popen(argv, pass_fds=(control_read, ready_write), stdout=subprocess.PIPE)
    os.close(control_read)
    os.close(ready_write)
    return proc, control_write, ready_read


def test_the_bootstrap_loads_nothing_a_cold_start_would_not(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(MODULES_APP)
    cold = subprocess.run([sys.executable, str(script)], capture_output=True, check=True)
    proc, control_write, ready_read = _bootstrap()
    with os.fdopen(ready_read, "rb") as ready:
        assert ready.readline() == b"\n", "nothing pre-imported, nothing loaded"
    run = {"env": dict(os.environ), "cwd": str(tmp_path), "argv": [str(script)]}
    with os.fdopen(control_write, "wb") as control:
        control.write(marshal.dumps(run))
    warm, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert warm.split() == cold.stdout.split()


def test_the_bootstrap_exits_quietly_when_not_needed() -> None:
    proc, control_write, ready_read = _bootstrap()
    os.close(control_write)
    out, _ = proc.communicate(timeout=30)
    os.close(ready_read)
    assert (proc.returncode, out) == (0, b"")


def test_the_sdk_is_pre_imported_only_for_apps_that_import_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "lib/python3.11/site-packages/tower_oss-1.0.dist-info").mkdir(parents=True)
    plain, caller = tmp_path / "plain", tmp_path / "caller"
    (plain / "lib").mkdir(parents=True)
    (plain / "main.py").write_text("print('tower is a word here, not an import')\n")
    (caller / "lib").mkdir(parents=True)
    (caller / "main.py").write_text("from lib import work\n")
    (caller / "lib" / "work.py").write_text("def go():\n    import tower\n")
    assert sdk_modules(venv, plain) == ()
    assert sdk_modules(venv, caller) == SDK_MODULES
    assert sdk_modules(tmp_path / "no-sdk-venv", caller) == (), "a PyPI tower is left alone"


def test_the_pool_key_separates_what_is_pre_imported(tmp_path: Path) -> None:
    venv = Venv(tmp_path / "v1", "v1", cache_hit=True)
    bare = WarmSpec(venv, RunRequest(), ())
    with_sdk = WarmSpec(venv, RunRequest(), (), SDK_MODULES)
    assert bare.key != with_sdk.key


def test_the_pool_scans_a_package_once_per_venv(tmp_path: Path) -> None:
    venv_dir = tmp_path / "venv"
    (venv_dir / "lib/python3.11/site-packages/tower_oss-1.0.dist-info").mkdir(parents=True)
    venv = Venv(venv_dir, "v1", cache_hit=True)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("import tower\n")
    pool = WarmPool(None, None, RunDirs(tmp_path / "work"), {}, forks=False)  # type: ignore[arg-type]
    assert pool.preload_for(venv, "checksum-1", app) == SDK_MODULES
    (app / "main.py").write_text("print('no sdk')\n")
    # The same content (checksum) is not read again; new content is.
    assert pool.preload_for(venv, "checksum-1", app) == SDK_MODULES
    assert pool.preload_for(venv, "checksum-2", app) == ()
