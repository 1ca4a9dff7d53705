from __future__ import annotations

from pathlib import Path

import pytest

from tower.core.errors import TowerfileError
from tower.core.towerfile import (
    Parameter,
    load_towerfile,
    parse_towerfile,
    source_matches,
)

FULL = """\
[app]
name = "hello-world"
script = "./task.py"
description = "Says hello"
source = ["./task.py", "./**/*.py", "requirements.txt"]
import_paths = ["../lib"]
schedule = "0 * * * *"

[[parameters]]
name = "friend"
description = "A secret friend"
hidden = true

[[parameters]]
name = "foe"
description = "Something to avoid"
default = "Carl"
"""

MINIMAL = '[app]\nname = "hello"\nscript = "./main.py"\n'


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "Towerfile"
    path.write_text(text)
    return path


def parse_error(text: str, path: Path = Path("/apps/demo/Towerfile")) -> str:
    with pytest.raises(TowerfileError) as info:
        parse_towerfile(text, path=path)
    message = info.value.message
    assert str(path) in message, message
    return message


def test_parses_every_field(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    path = write(tmp_path / "app", FULL)

    towerfile = load_towerfile(path)

    assert towerfile.name == "hello-world"
    assert towerfile.script == "./task.py"
    assert towerfile.script_relpath == "task.py"
    assert towerfile.description == "Says hello"
    assert towerfile.source == ["./task.py", "./**/*.py", "requirements.txt"]
    assert towerfile.import_paths == ["../lib"]
    assert towerfile.import_dirs() == [(tmp_path / "lib").resolve()]
    assert towerfile.schedule == "0 * * * *"
    assert towerfile.parameters == [
        Parameter(name="friend", description="A secret friend", default="", hidden=True),
        Parameter(name="foe", description="Something to avoid", default="Carl"),
    ]
    assert towerfile.path == path
    assert towerfile.base_dir == tmp_path / "app"
    assert towerfile.raw == FULL.encode()
    assert towerfile.parameter_defaults() == {"friend": "", "foe": "Carl"}


def test_minimal_defaults(tmp_path: Path) -> None:
    towerfile = load_towerfile(write(tmp_path, MINIMAL))
    assert towerfile.description == ""
    assert towerfile.source == []
    assert towerfile.source_patterns == ["./**/*"]
    assert towerfile.import_paths == []
    assert towerfile.parameters == []
    assert towerfile.schedule is None
    assert towerfile.parameter_defaults() == {}


def test_load_accepts_directory_or_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_towerfile(tmp_path).path == path
    assert load_towerfile(path).path == path


def test_shell_script_accepted(tmp_path: Path) -> None:
    text = '[app]\nname = "sh-app"\nscript = "./run.sh"\n'
    assert load_towerfile(write(tmp_path, text)).script == "./run.sh"


def test_missing_towerfile_names_directory_and_fix(tmp_path: Path) -> None:
    with pytest.raises(TowerfileError) as info:
        load_towerfile(tmp_path)
    assert info.value.message == (
        f"No Towerfile in {tmp_path}. Create one with [app] name and script "
        "— see examples/hello-world."
    )


def test_missing_file_path(tmp_path: Path) -> None:
    with pytest.raises(TowerfileError) as info:
        load_towerfile(tmp_path / "Towerfile.dev")
    assert info.value.message.startswith(f"No Towerfile at {tmp_path / 'Towerfile.dev'}.")


def test_toml_syntax_error_has_line_and_column() -> None:
    message = parse_error('[app]\nname = "x"\nscript = \n')
    assert "invalid TOML" in message
    assert "line 3" in message
    assert "column" in message


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "Towerfile").write_bytes(b'[app]\nname = "\xff"\n')
    with pytest.raises(TowerfileError, match="not UTF-8"):
        load_towerfile(tmp_path)


def test_missing_app_section() -> None:
    message = parse_error('[[parameters]]\nname = "x"\n')
    assert "[app] is missing" in message


def test_unknown_top_level_key() -> None:
    message = parse_error('name = "x"\n[app]\nname = "x"\nscript = "a.py"\n')
    assert "top-level key 'name'" in message
    assert "[app]" in message


def test_missing_name() -> None:
    message = parse_error('[app]\nscript = "./main.py"\n')
    assert message == (
        'Towerfile /apps/demo/Towerfile: [app].name is missing. Add `name = "my-app"` under [app].'
    )


def test_missing_script() -> None:
    message = parse_error('[app]\nname = "demo"\n')
    assert "[app].script is missing" in message
    assert 'script = "./main.py"' in message


@pytest.mark.parametrize("name", ["-leading-dash", "has space", "dots.not.allowed", "x" * 129])
def test_invalid_name(name: str) -> None:
    message = parse_error(f'[app]\nname = "{name}"\nscript = "./main.py"\n')
    assert "[app].name" in message
    assert "not a valid app name" in message


def test_script_must_be_py_or_sh() -> None:
    message = parse_error('[app]\nname = "demo"\nscript = "./main.rb"\n')
    assert "[app].script" in message
    assert ".py" in message and ".sh" in message


def test_script_outside_app_dir() -> None:
    message = parse_error('[app]\nname = "demo"\nscript = "../main.py"\n')
    assert "[app].script" in message
    assert "outside the app directory" in message


def test_unknown_app_key_lists_allowed_keys() -> None:
    message = parse_error(MINIMAL + 'entrypoint = "x"\n')
    assert "[app] has unknown key entrypoint" in message
    for key in ("name", "script", "description", "source", "import_paths", "schedule"):
        assert key in message
    assert "legacy" in message


def test_schedule_is_accepted_legacy_key() -> None:
    towerfile = parse_towerfile(MINIMAL + 'schedule = "@daily"\n', path=Path("/x/Towerfile"))
    assert towerfile.schedule == "@daily"


def test_unknown_parameter_key() -> None:
    message = parse_error(MINIMAL + '[[parameters]]\nname = "p"\nrequired = true\n')
    assert "[[parameters]] #1 has unknown key required" in message
    assert "name, description, default, hidden" in message


@pytest.mark.parametrize(
    ("snippet", "location"),
    [
        ('[app]\nname = 5\nscript = "./main.py"\n', "[app].name"),
        ('[app]\nname = "demo"\nscript = ["./main.py"]\n', "[app].script"),
        (MINIMAL + 'source = "./**/*"\n', "[app].source"),
        (MINIMAL + "source = [1]\n", "[app].source"),
        (MINIMAL + 'import_paths = "../lib"\n', "[app].import_paths"),
        (MINIMAL + "description = 3\n", "[app].description"),
        (MINIMAL + "schedule = 3\n", "[app].schedule"),
        (MINIMAL + '[[parameters]]\nname = "p"\nhidden = "yes"\n', "[[parameters]] 'p'.hidden"),
        (MINIMAL + '[[parameters]]\nname = "p"\ndescription = 1\n', "'p'.description"),
        (MINIMAL + "[[parameters]]\nname = 7\n", "[[parameters]] #1.name"),
        (MINIMAL + '[[parameters]]\ndescription = "no name"\n', "[[parameters]] #1.name"),
        ('parameters = "x"\n' + MINIMAL, "[[parameters]]"),
        ('app = "x"\n', "[app]"),
    ],
)
def test_wrong_types_name_the_field(snippet: str, location: str) -> None:
    message = parse_error(snippet)
    assert location in message


def test_non_string_default_is_rejected_with_quoted_fix() -> None:
    message = parse_error(MINIMAL + '[[parameters]]\nname = "n"\ndefault = 5\n')
    assert "[[parameters]] 'n'.default must be a string, got integer 5" in message
    assert 'default = "5"' in message

    message = parse_error(MINIMAL + '[[parameters]]\nname = "n"\ndefault = true\n')
    assert 'default = "true"' in message


def test_duplicate_parameter_names() -> None:
    message = parse_error(MINIMAL + '[[parameters]]\nname = "p"\n[[parameters]]\nname = "p"\n')
    assert "[[parameters]] 'p' is declared more than once" in message


def test_hidden_parameter_with_default_rejected() -> None:
    text = MINIMAL + '[[parameters]]\nname = "token"\nhidden = true\ndefault = "abc"\n'
    message = parse_error(text)
    assert "[[parameters]] 'token'.default" in message
    assert "hidden parameters may only have empty defaults" in message
    assert "--parameter at run time" in message


def test_hidden_parameter_with_empty_default_accepted() -> None:
    text = MINIMAL + '[[parameters]]\nname = "token"\nhidden = true\ndefault = ""\n'
    towerfile = parse_towerfile(text, path=Path("/x/Towerfile"))
    assert towerfile.parameters[0].hidden


@pytest.mark.parametrize("entry", ["../lib:../other", "../lib;../other"])
def test_import_path_separators_rejected(entry: str) -> None:
    message = parse_error(MINIMAL + f'import_paths = ["{entry}"]\n')
    assert "[app].import_paths" in message
    assert "':' or ';'" in message


def test_import_path_must_be_existing_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "app", MINIMAL + 'import_paths = ["../missing"]\n')
    with pytest.raises(TowerfileError) as info:
        load_towerfile(path)
    assert str(path) in info.value.message
    assert "[app].import_paths entry '../missing' is not a directory" in info.value.message

    (tmp_path / "afile").write_text("x")
    path.write_text(MINIMAL + 'import_paths = ["../afile"]\n')
    with pytest.raises(TowerfileError, match="not a directory"):
        load_towerfile(path)


def test_import_paths_with_same_basename_collide(tmp_path: Path) -> None:
    (tmp_path / "a" / "lib").mkdir(parents=True)
    (tmp_path / "b" / "lib").mkdir(parents=True)
    path = write(tmp_path / "app", MINIMAL + 'import_paths = ["../a/lib", "../b/lib"]\n')
    with pytest.raises(TowerfileError, match="modules/lib"):
        load_towerfile(path)


def test_script_not_matched_by_source() -> None:
    message = parse_error(MINIMAL + 'source = ["./lib/*.py"]\n')
    assert "script './main.py' is not matched by [app].source" in message
    assert "Add './main.py' to source" in message


def test_source_outside_app_dir_rejected() -> None:
    message = parse_error(MINIMAL + 'source = ["./main.py", "../secrets/*"]\n')
    assert "[app].source" in message
    assert "import_paths" in message


def test_error_carries_location() -> None:
    with pytest.raises(TowerfileError) as info:
        parse_towerfile('[app]\nscript = "./main.py"\n', path=Path("/x/Towerfile"))
    assert info.value.location == "[app].name"
    assert info.value.code == "invalid_towerfile"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("./**/*", "main.py", True),
        ("./**/*", "a/b/c.txt", True),
        ("./**/*", ".dlt/config.toml", True),
        ("./*.py", "main.py", True),
        ("./*.py", "pkg/mod.py", False),
        ("*.py", "./main.py", True),
        ("./**/*.py", "main.py", True),
        ("./**/*.py", "pkg/sub/mod.py", True),
        ("./**/*.py", "pkg/data.csv", False),
        ("requirements.txt", "requirements.txt", True),
        ("requirements.txt", "sub/requirements.txt", False),
        ("./_data", "_data/a.csv", True),
        ("./_data/", "_data/deep/a.csv", True),
        ("./_data/*", "_data/a.csv", True),
        ("./_data/*", "_database.csv", False),
        ("pkg/**", "pkg/a/b.py", True),
        ("pkg/**", "pkgx/a.py", False),
        ("a/**/z.py", "a/z.py", True),
        ("a/**/z.py", "a/b/c/z.py", True),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("[ab].py", "a.py", True),
        ("[!ab].py", "a.py", False),
        ("[!ab].py", "c.py", True),
        ("[a-c].py", "b.py", True),
        ("a.b", "axb", False),
        ("./", "anything/at/all", True),
    ],
)
def test_source_globs(pattern: str, path: str, expected: bool) -> None:
    assert source_matches(path, [pattern]) is expected
