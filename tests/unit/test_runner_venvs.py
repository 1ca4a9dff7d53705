"""Dependency specs and venv keys (no uv needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower.runner.venvs import (
    normalize_name,
    pyproject_names,
    read_dependency_spec,
    requirement_name,
    venv_key,
)

PY = "CPython 3.11.7 x86_64"
SDK = "src-abc"


def app(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return tmp_path


def key_of(app_dir: Path, python: str = PY, sdk: str = SDK) -> str:
    return venv_key(read_dependency_spec(app_dir), python, sdk)


def test_same_spec_same_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "requirements.txt").write_text("six==1.16.0\n")
    (b / "requirements.txt").write_text("six==1.16.0\n")
    (b / "main.py").write_text("print('other code, same deps')\n")
    assert key_of(a) == key_of(b)


def test_changed_requirements_new_key(tmp_path: Path) -> None:
    app(tmp_path, {"requirements.txt": "six==1.16.0\n"})
    before = key_of(tmp_path)
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    assert key_of(tmp_path) != before


def test_key_covers_python_sdk_and_lock(tmp_path: Path) -> None:
    app(tmp_path, {"pyproject.toml": '[project]\nname = "x"\nversion = "0"\n'})
    base = key_of(tmp_path)
    assert key_of(tmp_path, python="CPython 3.12.1 x86_64") != base
    assert key_of(tmp_path, sdk="src-def") != base
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert key_of(tmp_path) != base


def test_spec_kinds(tmp_path: Path) -> None:
    assert read_dependency_spec(tmp_path).kind == "none"
    app(tmp_path, {"requirements.txt": "six\n"})
    spec = read_dependency_spec(tmp_path)
    assert (spec.kind, spec.source_file, spec.frozen) == ("requirements", "requirements.txt", False)
    app(tmp_path, {"pyproject.toml": '[project]\nname = "x"\n', "uv.lock": ""})
    spec = read_dependency_spec(tmp_path)
    assert (spec.kind, spec.source_file, spec.frozen) == ("pyproject", "pyproject.toml", True)


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("tower[iceberg]>=0.3", "tower"),
        ("Tower_OSS==0.1", "tower-oss"),
        ("six==1.16.0  # comment", "six"),
        ("requests @ https://example.com/r.whl", "requests"),
        ("-r other.txt", None),
        ("--index-url https://x", None),
        ("# only a comment", None),
        ("", None),
    ],
)
def test_requirement_name(line: str, name: str | None) -> None:
    assert requirement_name(line) == name


def test_declares_tower(tmp_path: Path) -> None:
    app(tmp_path, {"requirements.txt": "six\nTower[iceberg]>=0.3\n"})
    assert read_dependency_spec(tmp_path).declares_tower
    app(tmp_path, {"requirements.txt": "towerlib\ntower-tools\n"})
    assert not read_dependency_spec(tmp_path).declares_tower


def test_pyproject_names() -> None:
    text = """
[project]
name = "x"
dependencies = ["polars>=1", "tower[iceberg]"]
[dependency-groups]
dev = ["pytest"]
"""
    assert pyproject_names(text) == {"polars", "tower", "pytest"}
    assert pyproject_names("not toml [") == set()


def test_normalize_name() -> None:
    assert normalize_name("Tower__OSS.x") == "tower-oss-x"
