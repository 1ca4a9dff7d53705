"""The Towerfile: its model, its parser and the rules that make one valid.

This module owns everything a Towerfile *means*: the ``[app]`` table, the
``[[parameters]]`` entries, and the ``source`` glob language (shared with
:mod:`tower.core.package`, which decides what goes into a package with the same
matcher that validates the Towerfile here).

:func:`parse_towerfile` is pure: it looks only at the text. :func:`load_towerfile`
reads the file and adds the checks that need the filesystem (``import_paths`` must
be existing directories that do not collide under ``modules/``).

Every error is a :class:`~tower.core.errors.TowerfileError` whose message names the
file, the field and the fix.

Parameter ``default`` values must be TOML strings. Numbers and booleans are rejected
rather than converted, because the official Tower CLI rejects them too and a
Towerfile should mean the same thing to both.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tower.core.errors import TowerfileError

TOWERFILE_NAME = "Towerfile"
#: What ``source`` means when it is absent or empty: every file under the app directory.
DEFAULT_SOURCE = "./**/*"
APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
SCRIPT_SUFFIXES = (".py", ".sh")

APP_KEYS: tuple[str, ...] = (
    "name",
    "script",
    "description",
    "source",
    "import_paths",
    "schedule",
)
PARAMETER_KEYS: tuple[str, ...] = ("name", "description", "default", "hidden")
TOP_LEVEL_KEYS: tuple[str, ...] = ("app", "parameters")


class Parameter(BaseModel):
    """One ``[[parameters]]`` entry. A hidden parameter never has a default."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    default: str = ""
    hidden: bool = False


class Towerfile(BaseModel):
    """A parsed, validated Towerfile and where it came from."""

    model_config = ConfigDict(frozen=True)

    name: str
    script: str
    description: str = ""
    #: globs relative to :attr:`base_dir`; empty means "everything" (``./**/*``)
    source: list[str] = Field(default_factory=list)
    import_paths: list[str] = Field(default_factory=list)
    parameters: list[Parameter] = Field(default_factory=list)
    #: legacy key: parsed so old Towerfiles load, never used (MANIFEST says null)
    schedule: str | None = None
    #: the Towerfile file itself
    path: Path
    #: the file's original bytes, packaged verbatim
    raw: bytes = Field(default=b"", repr=False)

    @property
    def base_dir(self) -> Path:
        """The app directory: globs and import paths are relative to it."""
        return self.path.parent

    @property
    def script_relpath(self) -> str:
        """The script relative to :attr:`base_dir`, without a leading ``./``."""
        return normalize_relpath(self.script)

    @property
    def source_patterns(self) -> list[str]:
        """The effective ``source`` globs (the default when none were given)."""
        return list(self.source) or [DEFAULT_SOURCE]

    def import_dirs(self) -> list[Path]:
        """Each import path as an absolute, resolved directory."""
        return [(self.base_dir / p).resolve() for p in self.import_paths]

    def parameter_defaults(self) -> dict[str, str]:
        """Parameter name -> default value; hidden parameters default to ``""``."""
        return {p.name: "" if p.hidden else p.default for p in self.parameters}


# --------------------------------------------------------------------------- globs


def normalize_relpath(path: str) -> str:
    """``./a//b/`` -> ``a/b``: the form archive names and glob matching use."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _segment_regex(segment: str) -> str:
    """Translate one glob path segment; wildcards never cross a ``/``."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``source`` glob.

    ``**`` as a whole segment spans zero or more directories. A pattern that matches
    a directory also matches every file below it (``"./_data"`` packages the whole
    folder), hence the optional ``/...`` tail.
    """
    normalized = normalize_relpath(pattern)
    if not normalized:  # "." or "./" names the app directory itself
        return re.compile(".*", re.DOTALL)
    segments = normalized.split("/")
    regex = ""
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment_regex(segment) + ("" if last else "/")
    return re.compile(rf"{regex}(?:/.*)?", re.DOTALL)


def source_matches(relpath: str, patterns: list[str]) -> bool:
    """True when the file at ``relpath`` (relative to the app dir) matches a glob.

    Leading ``./`` is optional on both sides; dotfiles are matched by ``*`` like
    any other name (``./**/*`` means everything).
    """
    target = normalize_relpath(relpath)
    return any(_glob_regex(p).fullmatch(target) for p in patterns)


# --------------------------------------------------------------------------- loading


def load_towerfile(path: Path) -> Towerfile:
    """Read and validate a Towerfile; ``path`` is the file or its directory."""
    file = _locate(Path(path))
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise TowerfileError(f"Towerfile {file}: cannot be read ({exc.strerror}).") from exc
    towerfile = _parse(_decode(raw, file), file, raw)
    _check_import_dirs(towerfile)
    return towerfile


def parse_towerfile(text: str, *, path: Path) -> Towerfile:
    """Validate Towerfile ``text`` that lives at ``path`` (used in messages and as base).

    Pure: checks that need the filesystem live in :func:`load_towerfile`.
    """
    return _parse(text, Path(path), text.encode("utf-8"))


def _locate(path: Path) -> Path:
    path = path.absolute()
    if path.is_dir():
        path = path / TOWERFILE_NAME
        if not path.is_file():
            raise TowerfileError(
                f"No Towerfile in {path.parent}. Create one with [app] name and script "
                "— see examples/hello-world."
            )
    elif not path.is_file():
        raise TowerfileError(
            f"No Towerfile at {path}. Create one with [app] name and script "
            "— see examples/hello-world."
        )
    return path


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TowerfileError(
            f"Towerfile {path}: is not UTF-8 text (bad byte at offset {exc.start}). "
            "Save it as UTF-8."
        ) from exc


def _parse(text: str, path: Path, raw: bytes) -> Towerfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line L, column C)".
        raise TowerfileError(
            f"Towerfile {path}: invalid TOML: {exc}. Fix the syntax at that position."
        ) from exc
    return _Validator(path).towerfile(data, raw)


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names |= {list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


class _Validator:
    """Turns a TOML document into a :class:`Towerfile`, failing with precise messages."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(
        self, location: str, problem: str, fix: str, value: Any = None, subject: str = ""
    ) -> TowerfileError:
        message = f"Towerfile {self.path}: {subject or location} {problem}. {fix}"
        return TowerfileError(message, location=location, value=value)

    def towerfile(self, data: dict[str, Any], raw: bytes) -> Towerfile:
        self.check_top_level(data)
        app = data["app"]
        towerfile = Towerfile(
            name=self.name(app),
            script=self.script(app),
            description=self.string(app, "description", 'description = "What this app does"'),
            source=self.string_list(app, "source", 'source = ["./**/*.py"]'),
            import_paths=self.import_paths(app),
            parameters=self.parameters(data.get("parameters", [])),
            schedule=self.optional_string(app, "schedule"),
            path=self.path,
            raw=raw,
        )
        self.check_script_in_source(towerfile)
        return towerfile

    def check_top_level(self, data: dict[str, Any]) -> None:
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise self.fail(
                unknown[0],
                "is not allowed at the top level",
                "Allowed sections: [app] and [[parameters]]; settings such as name and "
                "script go under [app]. Move, rename or remove it.",
                subject=f"top-level key {unknown[0]!r}",
            )
        if "app" not in data:
            raise self.fail(
                "[app]",
                "is missing",
                'Start the file with [app] and set name = "my-app" and script = "./main.py".',
            )
        if not isinstance(data["app"], dict):
            raise self.fail("[app]", "must be a table", "Write it as an [app] section header.")
        self.check_keys(data["app"], "[app]", APP_KEYS, note=" (schedule is legacy and ignored)")

    def check_keys(
        self, table: dict[str, Any], where: str, allowed: tuple[str, ...], note: str = ""
    ) -> None:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            names = ", ".join(unknown)
            raise self.fail(
                where,
                f"has unknown key{'s' if len(unknown) > 1 else ''} {names}",
                f"Allowed keys: {', '.join(allowed)}{note}. Remove or rename {names}.",
            )

    def required_string(self, app: dict[str, Any], key: str, example: str) -> str:
        if key not in app:
            raise self.fail(f"[app].{key}", "is missing", f"Add `{example}` under [app].")
        value = app[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                f"[app].{key}",
                f"must be a non-empty string, got {_type_name(value)} {value!r}",
                f"Write `{example}`.",
                value,
            )
        return value

    def name(self, app: dict[str, Any]) -> str:
        name = self.required_string(app, "name", 'name = "my-app"')
        if not APP_NAME_RE.match(name):
            raise self.fail(
                "[app].name",
                f"{name!r} is not a valid app name",
                "Use 1-128 letters, digits, '-' or '_', starting with a letter or digit, "
                'e.g. name = "my-app".',
                name,
            )
        return name

    def script(self, app: dict[str, Any]) -> str:
        script = self.required_string(app, "script", 'script = "./main.py"')
        if not script.endswith(SCRIPT_SUFFIXES):
            raise self.fail(
                "[app].script",
                f"{script!r} is neither a Python (.py) nor a shell (.sh) script",
                'Point it at a .py or .sh file, e.g. script = "./main.py".',
                script,
            )
        if _escapes(script):
            raise self.fail(
                "[app].script",
                f"{script!r} is outside the app directory",
                "Give a path relative to the Towerfile's directory, without '..'.",
                script,
            )
        return script

    def string(self, table: dict[str, Any], key: str, example: str, where: str = "[app]") -> str:
        value = table.get(key, "")
        if not isinstance(value, str):
            raise self.fail(
                f"{where}.{key}",
                f"must be a string, got {_type_name(value)} {value!r}",
                f"Write `{example}`.",
                value,
            )
        return value

    def optional_string(self, app: dict[str, Any], key: str) -> str | None:
        if key not in app:
            return None
        return self.string(app, key, f'{key} = "..."')

    def string_list(self, app: dict[str, Any], key: str, example: str) -> list[str]:
        value = app.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(
                f"[app].{key}",
                f"must be a list of non-empty strings, got {value!r}",
                f"Write it as `{example}`.",
                value,
            )
        for item in value:
            if key == "source" and _escapes(item):
                raise self.fail(
                    "[app].source",
                    f"entry {item!r} points outside the app directory",
                    "Source globs are relative to the Towerfile's directory; use import_paths "
                    "for code that lives elsewhere.",
                    item,
                )
        return value

    def import_paths(self, app: dict[str, Any]) -> list[str]:
        paths = self.string_list(app, "import_paths", 'import_paths = ["../lib"]')
        for item in paths:
            if ":" in item or ";" in item:
                raise self.fail(
                    "[app].import_paths",
                    f"entry {item!r} contains ':' or ';'",
                    "List each directory as its own entry, e.g. import_paths = "
                    '["../lib", "../shared"].',
                    item,
                )
        return paths

    def parameters(self, entries: Any) -> list[Parameter]:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self.fail(
                "[[parameters]]",
                "must be an array of tables",
                'Declare each one under its own [[parameters]] header with name = "...".',
            )
        params = [self.parameter(entry, index) for index, entry in enumerate(entries, 1)]
        self.check_unique(params)
        return params

    def parameter(self, entry: dict[str, Any], index: int) -> Parameter:
        where = f"[[parameters]] #{index}"
        self.check_keys(entry, where, PARAMETER_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise self.fail(
                f"{where}.name",
                f"must be a non-empty string without '=', got {name!r}",
                'Add `name = "MY_PARAMETER"` to this [[parameters]] entry.',
                name,
            )
        where = f"[[parameters]] {name!r}"
        default = self.default(entry, where)
        hidden = self.hidden(entry, where)
        if hidden and default:
            raise self.fail(
                f"{where}.default",
                "is set on a hidden parameter; hidden parameters may only have empty defaults",
                "Remove the default and pass the value with --parameter at run time.",
                default,
            )
        description = self.string(entry, "description", 'description = "..."', where)
        return Parameter(name=name, description=description, default=default, hidden=hidden)

    def default(self, entry: dict[str, Any], where: str) -> str:
        value = entry.get("default", "")
        if not isinstance(value, str):
            literal = str(value).lower() if isinstance(value, bool) else str(value)
            raise self.fail(
                f"{where}.default",
                f"must be a string, got {_type_name(value)} {value!r}",
                f'Quote it: default = "{literal}".',
                value,
            )
        return value

    def hidden(self, entry: dict[str, Any], where: str) -> bool:
        value = entry.get("hidden", False)
        if not isinstance(value, bool):
            raise self.fail(
                f"{where}.hidden",
                f"must be true or false, got {_type_name(value)} {value!r}",
                "Write `hidden = true` (no quotes).",
                value,
            )
        return value

    def check_unique(self, params: list[Parameter]) -> None:
        seen: set[str] = set()
        for param in params:
            if param.name in seen:
                raise self.fail(
                    f"[[parameters]] {param.name!r}",
                    "is declared more than once",
                    "Keep one [[parameters]] entry per name.",
                    param.name,
                )
            seen.add(param.name)

    def check_script_in_source(self, towerfile: Towerfile) -> None:
        if towerfile.source and not source_matches(towerfile.script, towerfile.source):
            raise self.fail(
                "[app].source",
                "is not matched by [app].source",
                f"Add {towerfile.script!r} to source, or the package will not contain it.",
                towerfile.script,
                subject=f"script {towerfile.script!r}",
            )


def _escapes(relpath: str) -> bool:
    """True for absolute paths and paths that climb out with ``..``."""
    posix = relpath.replace("\\", "/")
    return PurePosixPath(posix).is_absolute() or ".." in posix.split("/")


# --------------------------------------------------------------------------- filesystem checks


def _check_import_dirs(towerfile: Towerfile) -> None:
    """Every import path must be a directory, and their names must not collide."""
    owners: dict[str, str] = {}
    for entry, directory in zip(towerfile.import_paths, towerfile.import_dirs(), strict=True):
        if not directory.is_dir():
            raise TowerfileError(
                f"Towerfile {towerfile.path}: [app].import_paths entry {entry!r} is not a "
                f"directory ({directory} does not exist or is a file). Fix the path; it is "
                "relative to the Towerfile's directory.",
                location="[app].import_paths",
                value=entry,
            )
        if directory.name in owners:
            raise TowerfileError(
                f"Towerfile {towerfile.path}: [app].import_paths entries "
                f"{owners[directory.name]!r} and {entry!r} would both be packaged as "
                f"modules/{directory.name}. Rename one of the directories.",
                location="[app].import_paths",
                value=entry,
            )
        owners[directory.name] = entry
