"""The package format: building, reading and safely extracting app packages.

A package is a byte-deterministic gzip-compressed tar (see the API contract, §4.2)::

    MANIFEST                       compact JSON (:class:`Manifest`)
    Towerfile                      the original Towerfile bytes
    app/<relpath>                  files matched by [app].source
    modules/<name>/<relpath>       files under each [app].import_paths entry

The same bytes come out of two builds of the same tree, whatever the files' mtimes,
owners or modes, so the SHA-256 of a package identifies its contents. The MANIFEST
``checksum`` covers the ``app/`` and ``modules/`` files; it is verified on every
extraction and, on request, when a package is inspected.

The builder reads the app directory; the readers work on bytes and, for
:func:`extract_package`, write only below the destination the caller names.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tower.core.errors import IntegrityError, PackageError
from tower.core.towerfile import TOWERFILE_NAME, Parameter, Towerfile, source_matches

MANIFEST_NAME = "MANIFEST"
MANIFEST_VERSION = 3
#: Version 2 used the same checksum with platform path separators: identical on POSIX.
SUPPORTED_VERSIONS = frozenset({2, 3})
APP_DIR_NAME = "app"
MODULES_DIR_NAME = "modules"

MAX_PACKAGE_BYTES = 50 * 1024 * 1024
#: Guard against decompression bombs when reading: packages are at most 50 MiB
#: compressed, and real source trees rarely compress better than 20:1.
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
#: MANIFEST and Towerfile are read into memory; they are tiny in any real package.
MAX_METADATA_BYTES = 1024 * 1024

EXCLUDED_NAMES = frozenset({"__pycache__", ".git", ".venv", ".gitignore"})
EXCLUDED_SUFFIXES = (".pyc",)

_CHUNK = 1024 * 1024


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Manifest:
    """The MANIFEST of a package; field order is the JSON key order."""

    version: int
    invoke: str
    parameters: tuple[Parameter, ...] = ()
    schedule: str | None = None
    import_paths: tuple[str, ...] = ()
    app_dir_name: str = APP_DIR_NAME
    modules_dir_name: str = MODULES_DIR_NAME
    checksum: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "invoke": self.invoke,
            "parameters": [_parameter_dict(p) for p in self.parameters],
            "schedule": self.schedule,
            "import_paths": list(self.import_paths),
            "app_dir_name": self.app_dir_name,
            "modules_dir_name": self.modules_dir_name,
            "checksum": self.checksum,
        }

    def to_json(self) -> str:
        """Compact JSON, exactly as the official builder writes it."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate a MANIFEST; raises :class:`PackageError`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PackageError(
                f"The package MANIFEST is not valid JSON ({exc}). Rebuild the package."
            ) from exc
        if not isinstance(data, dict):
            raise PackageError("The package MANIFEST must be a JSON object. Rebuild the package.")
        return _manifest_from_dict(data)


@dataclass(frozen=True)
class BuiltPackage:
    """A freshly built package and what it contains."""

    data: bytes
    manifest: Manifest
    #: lowercase hex SHA-256 of :attr:`data` (the compressed archive)
    sha256: str
    #: archive names of the app/ and modules/ files, sorted
    files: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class PackageInfo:
    """What a reader learns from a package without extracting it."""

    manifest: Manifest
    #: the Towerfile packaged next to the MANIFEST; None for packages built without one
    towerfile_text: str | None


@dataclass(frozen=True)
class _Entry:
    """One app/ or modules/ file to pack, hashed before the archive is written."""

    arcname: str
    path: Path
    sha256: str
    size: int


@dataclass
class _Scan:
    """What one pass over an archive found."""

    hashes: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)


# --------------------------------------------------------------------------- hashing


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def contents_checksum(file_hashes: Mapping[str, str]) -> str:
    """The MANIFEST checksum: SHA-256 over ``name:hexdigest`` pairs in name order."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}:{file_hashes[name]}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise PackageError(f"Cannot read {path} for the package: {exc.strerror}.") from exc
    return digest.hexdigest(), size


class _HashingReader:
    """File wrapper that hashes what tarfile copies, to catch files changing mid-build."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.digest.update(chunk)
        return chunk


# --------------------------------------------------------------------------- collecting files


def _excluded(name: str) -> bool:
    return name in EXCLUDED_NAMES or name.endswith(EXCLUDED_SUFFIXES)


def _walk(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the files under ``root``, minus the exclusions.

    Symlinks are skipped, as the official builder does: following them could
    package files from anywhere on the machine (use import_paths for shared code).
    The root's own Towerfile is never packaged.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not _excluded(d) and not (here / d).is_symlink()
        )
        for name in sorted(filenames):
            path = here / name
            relpath = path.relative_to(root).as_posix()
            if _excluded(name) or relpath == TOWERFILE_NAME or path.is_symlink():
                continue
            yield relpath


def package_files(towerfile: Towerfile) -> dict[str, Path]:
    """Archive name -> file on disk, for every app/ and modules/ file, sorted by name."""
    files = {
        f"{APP_DIR_NAME}/{rel}": towerfile.base_dir / rel
        for rel in _walk(towerfile.base_dir)
        if source_matches(rel, towerfile.source_patterns)
    }
    for entry, directory in zip(towerfile.import_paths, towerfile.import_dirs(), strict=True):
        if not directory.is_dir():
            raise PackageError(
                f"Import path {entry!r} from {towerfile.path} is not a directory "
                f"({directory}). Fix [app].import_paths."
            )
        for rel in _walk(directory):
            files[f"{MODULES_DIR_NAME}/{directory.name}/{rel}"] = directory / rel
    return dict(sorted(files.items()))


# --------------------------------------------------------------------------- building


def build_package(towerfile: Towerfile) -> BuiltPackage:
    """Build the package for ``towerfile``; raises :class:`PackageError`."""
    files = package_files(towerfile)
    _check_script(towerfile, files)
    entries = [_Entry(name, path, *_hash_file(path)) for name, path in files.items()]
    checksum = contents_checksum({e.arcname: e.sha256 for e in entries})
    manifest = manifest_for(towerfile, checksum)
    raw = towerfile.raw or towerfile.path.read_bytes()
    data = _write_archive(manifest, raw, entries, towerfile)
    return BuiltPackage(data, manifest, sha256_hex(data), tuple(files))


def manifest_for(towerfile: Towerfile, checksum: str) -> Manifest:
    """The MANIFEST a package of ``towerfile`` with contents ``checksum`` carries."""
    return Manifest(
        version=MANIFEST_VERSION,
        invoke=towerfile.script,
        parameters=tuple(towerfile.parameters),
        # schedule is a legacy Towerfile key; packages never carry it.
        schedule=None,
        import_paths=tuple(f"{MODULES_DIR_NAME}/{d.name}" for d in towerfile.import_dirs()),
        checksum=checksum,
    )


def _check_script(towerfile: Towerfile, files: Mapping[str, Path]) -> None:
    arcname = f"{APP_DIR_NAME}/{towerfile.script_relpath}"
    if arcname not in files:
        raise PackageError(
            f"Script {towerfile.script!r} not found in the package: {arcname} is not among "
            f"the packaged files. Check that {towerfile.base_dir / towerfile.script_relpath} "
            f"exists and fix source in {towerfile.path} so that it matches the script "
            "(__pycache__, .git, .venv and *.pyc are never packaged).",
            location="[app].script",
            value=towerfile.script,
        )


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A header that carries nothing from the build machine: no owner, time or mode."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.type = tarfile.REGTYPE
    return info


def _write_archive(
    manifest: Manifest, towerfile_raw: bytes, entries: list[_Entry], towerfile: Towerfile
) -> bytes:
    metadata = {MANIFEST_NAME: manifest.to_json().encode(), TOWERFILE_NAME: towerfile_raw}
    members: list[tuple[str, bytes | _Entry]] = [*metadata.items()]
    members += [(e.arcname, e) for e in entries]
    buffer = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of build-machine details.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="", compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, member in sorted(members, key=lambda m: m[0]):
            _add_member(tar, name, member)
            _check_size(buffer.tell(), towerfile, entries)
    _check_size(len(buffer.getvalue()), towerfile, entries)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, member: bytes | _Entry) -> None:
    if isinstance(member, bytes):
        tar.addfile(_tar_info(name, len(member)), io.BytesIO(member))
        return
    try:
        with member.path.open("rb") as handle:
            reader = _HashingReader(handle)
            tar.addfile(_tar_info(name, member.size), reader)  # type: ignore[arg-type]
    except OSError as exc:
        raise _changed(member) from exc
    if reader.digest.hexdigest() != member.sha256:
        raise _changed(member)


def _changed(entry: _Entry) -> PackageError:
    return PackageError(f"{entry.path} changed while the package was being built. Build it again.")


def _check_size(size: int, towerfile: Towerfile, entries: list[_Entry]) -> None:
    if size <= MAX_PACKAGE_BYTES:
        return
    largest = sorted(entries, key=lambda e: e.size, reverse=True)[:3]
    listing = ", ".join(f"{e.arcname} ({_mib(e.size)})" for e in largest)
    raise PackageError(
        f"The package is larger than the {_mib(MAX_PACKAGE_BYTES)} limit (at least "
        f"{_mib(size)} compressed). Narrow [app].source in {towerfile.path} to leave out data "
        f"and build output; the largest files are {listing}."
    )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


# --------------------------------------------------------------------------- reading


def read_manifest(data: bytes) -> Manifest:
    """The MANIFEST of a package (contents are not verified)."""
    return inspect_package(data).manifest


def inspect_package(data: bytes, *, verify: bool = False) -> PackageInfo:
    """MANIFEST and Towerfile of a package; with ``verify``, also check the contents.

    Unsafe entries (absolute paths, ``..``, links, devices) are rejected either way,
    so a package accepted here is one :func:`extract_package` will accept too.
    """
    scan = _scan(data, dest=None)
    return _finish(scan, verify=verify)


def extract_package(data: bytes, dest: Path) -> Manifest:
    """Extract a package below ``dest`` (created if needed) and verify its checksum.

    ``dest`` should be empty: an entry never overwrites an existing file.
    Raises :class:`PackageError` for unsafe or malformed archives and
    :class:`IntegrityError` when the contents do not match the MANIFEST.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    scan = _scan(data, dest=dest.resolve())
    return _finish(scan, verify=True).manifest


@contextmanager
def _open_archive(data: bytes) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            yield tar
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PackageError(
            f"This is not a valid Tower package: expected a gzip-compressed tar archive "
            f"({exc}). Rebuild it with `tower deploy`."
        ) from exc


def _scan(data: bytes, dest: Path | None) -> _Scan:
    """Hash every file of the archive, keep its metadata, and write it below ``dest``."""
    scan = _Scan()
    with _open_archive(data) as tar:
        for name, member in _safe_members(tar):
            source = tar.extractfile(member)
            assert source is not None  # _safe_members yields regular files only
            if name in (MANIFEST_NAME, TOWERFILE_NAME):
                scan.metadata[name] = _read_metadata(name, source, member.size)
                source = io.BytesIO(scan.metadata[name])
            scan.hashes[name] = _store(source, dest, name)
    return scan


def _safe_members(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """Regular-file members with checked names; anything else that is not a dir fails."""
    seen: set[str] = set()
    total = 0
    for member in tar:
        name = _safe_name(member.name)
        if member.isdir():
            continue
        if not member.isreg():
            raise PackageError(
                f"Package entry {member.name!r} is a {_kind(member)}; Tower packages contain "
                "regular files only. Rebuild the package."
            )
        if not name or name in seen:
            raise PackageError(f"Package entry {member.name!r} is empty or appears twice.")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise PackageError(
                f"The package unpacks to more than {_mib(MAX_UNPACKED_BYTES)}; refusing it."
            )
        seen.add(name)
        yield name, member


def _safe_name(raw: str) -> str:
    """Normalize an entry name, rejecting anything that could land outside the root."""
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or ".." in parts or "\0" in raw:
        raise PackageError(
            f"Package entry {raw!r} points outside the package (absolute path or '..'); "
            "refusing to extract it."
        )
    return "/".join(parts)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev():
        return "device or FIFO"
    return f"tar entry of type {member.type!r}"


def _read_metadata(name: str, source: BinaryIO, size: int) -> bytes:
    if size > MAX_METADATA_BYTES:
        raise PackageError(f"The package {name} is {_mib(size)}; that is not a real {name}.")
    return source.read()


def _store(source: BinaryIO, dest: Path | None, name: str) -> str:
    """Hash ``source``, copying it to ``dest/name`` when extracting."""
    reader = _HashingReader(source)
    if dest is None:
        while reader.read(_CHUNK):
            pass
        return reader.digest.hexdigest()
    target = dest / name
    target.parent.mkdir(parents=True, exist_ok=True)
    # A pre-existing symlinked directory in dest must not redirect the write.
    if not target.parent.resolve().is_relative_to(dest):
        raise PackageError(f"Package entry {name!r} would be written outside {dest}.")
    try:
        # "xb" never follows or replaces an existing file or symlink.
        with target.open("xb") as sink:
            while chunk := reader.read(_CHUNK):
                sink.write(chunk)
    except FileExistsError as exc:
        raise PackageError(f"Cannot extract {name!r}: {target} already exists.") from exc
    target.chmod(0o644)
    return reader.digest.hexdigest()


def _finish(scan: _Scan, *, verify: bool) -> PackageInfo:
    if MANIFEST_NAME not in scan.metadata:
        raise PackageError(
            "The package has no MANIFEST, so it was not built by Tower. "
            "Build it with `tower deploy` or tower.core.package.build_package."
        )
    manifest = Manifest.from_json(scan.metadata[MANIFEST_NAME])
    if verify:
        verify_contents(manifest, scan.hashes)
    towerfile = scan.metadata.get(TOWERFILE_NAME)
    return PackageInfo(manifest, _decode_towerfile(towerfile) if towerfile is not None else None)


def _decode_towerfile(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError("The packaged Towerfile is not UTF-8 text. Rebuild.") from exc


def verify_contents(manifest: Manifest, file_hashes: Mapping[str, str]) -> None:
    """Raise :class:`IntegrityError` unless the app/ and modules/ files match the MANIFEST."""
    prefixes = (f"{manifest.app_dir_name}/", f"{manifest.modules_dir_name}/")
    covered = {n: h for n, h in file_hashes.items() if n.startswith(prefixes)}
    actual = contents_checksum(covered)
    if actual != manifest.checksum.lower():
        raise IntegrityError(
            f"package integrity check failed: the MANIFEST checksum is {manifest.checksum!r} "
            f"but the {len(covered)} packaged files hash to {actual!r}. The package was "
            "modified or corrupted after it was built; build and deploy it again.",
            value=manifest.checksum,
        )


# --------------------------------------------------------------------------- MANIFEST fields


def _parameter_dict(param: Parameter) -> dict[str, Any]:
    return {
        "name": param.name,
        "description": param.description,
        "default": param.default,
        "hidden": param.hidden,
    }


def _manifest_from_dict(data: dict[str, Any]) -> Manifest:
    version = data.get("version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise PackageError(
            f"Package MANIFEST version {version!r} is not supported (supported: "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}). Rebuild the package with "
            "a current tower CLI."
        )
    return Manifest(
        version=version,
        invoke=_text(data, "invoke", required=True),
        parameters=tuple(_parameter(p) for p in _list(data, "parameters")),
        schedule=_text(data, "schedule") or None,
        import_paths=tuple(_text({"entry": p}, "entry") for p in _list(data, "import_paths")),
        app_dir_name=_dir_name(data, "app_dir_name", APP_DIR_NAME),
        modules_dir_name=_dir_name(data, "modules_dir_name", MODULES_DIR_NAME),
        checksum=_text(data, "checksum", required=True),
    )


def _bad_field(key: str, problem: str) -> PackageError:
    return PackageError(f"Package MANIFEST field {key!r} {problem}. Rebuild the package.")


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _bad_field(key, f"must be a non-empty string, got {value!r}")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise _bad_field(key, f"must be a list, got {value!r}")
    return value


def _parameter(entry: Any) -> Parameter:
    if not isinstance(entry, dict):
        raise _bad_field("parameters", f"must hold objects, got {entry!r}")
    hidden = entry.get("hidden", False)
    if not isinstance(hidden, bool):
        raise _bad_field("parameters", f"has a non-boolean hidden flag {hidden!r}")
    return Parameter(
        name=_text(entry, "name", required=True),
        description=_text(entry, "description"),
        default=_text(entry, "default"),
        hidden=hidden,
    )


def _dir_name(data: Mapping[str, Any], key: str, default: str) -> str:
    value = _text(data, key) or default
    # Runners join these onto the extraction root, so they must be a single segment.
    if "/" in value or "\\" in value or value in (".", ".."):
        raise _bad_field(key, f"must be a plain directory name, got {value!r}")
    return value
