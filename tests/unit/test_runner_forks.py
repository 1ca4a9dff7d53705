"""Fork templates' parts that need no root: how a forked run's end is read from its
status pipe, the bubblewrap arguments of a template, and the venv's site dirs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tower.runner.forks import KILLED, TEMPLATE_CAPS, ForkedChild, site_dirs
from tower.runner.sandbox import Mounts, bwrap_argv

VENV = Path("/srv/tower/runner/venvs/abc")
SITE = VENV / "lib/python3.11/site-packages"
MOUNTS = Mounts(
    writable=(Path("/srv/tower/runner/work"),),
    readable=(VENV, Path("/opt/python3.11")),
    cwd=Path("/srv/tower/runner/work/slot"),
)
COMMAND = [str(VENV / "bin/python"), "-c", "...", "template", "3"]


@pytest.mark.parametrize(("said", "code"), [(b"0", 0), (b"137", 137), (b"", KILLED)])
def test_a_forked_child_reads_its_exit_status_from_the_status_pipe(said: bytes, code: int) -> None:
    status_read, status_write = os.pipe()
    out_read, out_write = os.pipe()
    os.close(out_write)
    ended: list[int] = []
    with os.fdopen(out_read, "rb") as output:
        child = ForkedChild(4242, status_read, output, output, on_exit=lambda: ended.append(1))
        assert child.poll() is None, "nothing said yet and the pipe open: still running"
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.01)
        os.write(status_write, said)
        os.close(status_write)
        assert child.wait(5) == code == child.returncode
        assert child.poll() == code, "read once, remembered"
    assert ended == [1], "its end is reported once"
    with pytest.raises(OSError):
        os.fstat(status_read)  # closed once read


def test_a_template_keeps_the_runners_pids_some_capabilities_and_hides_the_site_dir() -> None:
    argv = bwrap_argv(
        "bwrap",
        COMMAND,
        MOUNTS,
        system=[],
        isolate_network=False,
        own_pids=False,
        keep_caps=TEMPLATE_CAPS,
        hidden=(SITE,),
    )
    assert "--unshare-pid" not in argv, "each forked run gets its own PID namespace"
    for flag in ("--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent"):
        assert flag in argv
    # every capability dropped, then only the template's added back
    drop = argv.index("--cap-drop")
    assert argv[drop : drop + 2] == ["--cap-drop", "ALL"]
    adds = [i for i, arg in enumerate(argv) if arg == "--cap-add"]
    assert [argv[i + 1] for i in adds] == list(TEMPLATE_CAPS)
    assert drop < min(adds) and max(adds) < argv.index("--die-with-parent")
    # the site dir is covered after the venv is bound (else the bind would cover it)
    venv_bind = argv.index(str(VENV))
    assert argv[venv_bind - 1] == "--ro-bind"
    hide = argv.index(str(SITE))
    assert argv[hide - 1] == "--tmpfs" and venv_bind < hide < argv.index("--chdir")
    assert argv[argv.index("--") + 1 :] == COMMAND, "no setpriv: the template stays root"


def test_a_run_bwrap_argv_is_unchanged_by_the_template_options() -> None:
    plain = bwrap_argv("bwrap", COMMAND, MOUNTS, system=[], isolate_network=False)
    assert "--unshare-pid" in plain
    assert "--cap-drop" not in plain and "--cap-add" not in plain
    assert plain.count("--tmpfs") == 2, "/tmp and /dev/shm only"
    caps_only = bwrap_argv(
        "bwrap", COMMAND, MOUNTS, system=[], isolate_network=True, keep_caps=("CAP_SETUID",)
    )
    tail = caps_only[caps_only.index("--unshare-net") :]
    assert tail[:6] == [
        "--unshare-net",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--die-with-parent",
    ]


def test_site_dirs_are_the_venvs_site_packages_directories(tmp_path: Path) -> None:
    assert site_dirs(tmp_path) == ()
    for version in ("3.12", "3.11"):
        (tmp_path / f"lib/python{version}/site-packages").mkdir(parents=True)
    (tmp_path / "lib/python3.13").mkdir()
    (tmp_path / "lib/python3.13/site-packages").write_text("not a directory")
    (tmp_path / "lib/other/site-packages").mkdir(parents=True)
    assert site_dirs(tmp_path) == (
        tmp_path / "lib/python3.11/site-packages",
        tmp_path / "lib/python3.12/site-packages",
    )
