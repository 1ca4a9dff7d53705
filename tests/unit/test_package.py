from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tower.core import package
from tower.core.errors import IntegrityError, PackageError
from tower.core.package import (
    BuiltPackage,
    Manifest,
    build_package,
    extract_package,
    inspect_package,
    read_manifest,
    sha256_hex,
)
from tower.core.towerfile import Parameter, load_towerfile

TOWERFILE = """\
[app]
name = "demo"
script = "./main.py"
{extra}
[[parameters]]
name = "GREETING"
description = "who"
default = "world"
"""


def make_app(root: Path, files: dict[str, str | bytes], extra: str = "") -> Path:
    """Write an app directory with a Towerfile and ``files``; return the directory."""
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "Towerfile").write_text(TOWERFILE.format(extra=extra))
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return app


def build(app: Path) -> BuiltPackage:
    return build_package(load_towerfile(app))


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
        return out


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, content in entries:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def file_entry(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def rewrite(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The same package with some members' contents swapped."""
    contents = members(data) | replace
    return make_tar([file_entry(name, body) for name, body in contents.items()])


def expected_checksum(files: dict[str, bytes]) -> str:
    joined = "".join(f"{name}:{hashlib.sha256(files[name]).hexdigest()}" for name in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()


# --------------------------------------------------------------------------- contents


def test_default_source_includes_everything_minus_exclusions(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {
            "app/main.py": "print('hi')",
            "app/requirements.txt": "requests\n",
            "app/pkg/mod.py": "X = 1",
            "app/pkg/Towerfile": "nested towerfiles are ordinary files",
            "app/.dlt/config.toml": "[x]",
            "app/data/big.csv": "a,b\n",
            "app/mod.pyc": b"\0",
            "app/pkg/__pycache__/mod.cpython-311.pyc": b"\0",
            "app/pkg/__pycache__/notes.txt": "cache dir is skipped entirely",
            "app/.git/HEAD": "ref: refs/heads/main",
            "app/.venv/bin/python": "#!",
            "app/.gitignore": "*.pyc",
            "app/pkg/.gitignore": "*.log",
        },
    )

    built = build(app)

    assert built.files == (
        "app/.dlt/config.toml",
        "app/data/big.csv",
        "app/main.py",
        "app/pkg/Towerfile",
        "app/pkg/mod.py",
        "app/requirements.txt",
    )
    assert names(built.data) == ["MANIFEST", "Towerfile", *built.files]


def test_explicit_source_globs(tmp_path: Path) -> None:
    extra = 'source = ["./main.py", "./lib/**/*.py", "requirements.txt", "./_data"]'
    app = make_app(
        tmp_path,
        {
            "app/main.py": "",
            "app/other.py": "",
            "app/requirements.txt": "",
            "app/lib/a.py": "",
            "app/lib/deep/b.py": "",
            "app/lib/readme.md": "",
            "app/_data/x.csv": "",
            "app/_data/sub/y.csv": "",
            "app/sub/requirements.txt": "",
        },
        extra,
    )

    assert build(app).files == (
        "app/_data/sub/y.csv",
        "app/_data/x.csv",
        "app/lib/a.py",
        "app/lib/deep/b.py",
        "app/main.py",
        "app/requirements.txt",
    )


def test_import_paths_outside_app_land_in_modules(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {
            "app/main.py": "import shared",
            "lib/shared/__init__.py": "VALUE = 1",
            "lib/shared/__pycache__/x.pyc": b"\0",
            "lib/util.py": "",
        },
        'import_paths = ["../lib"]',
    )

    built = build(app)

    assert built.files == (
        "app/main.py",
        "modules/lib/shared/__init__.py",
        "modules/lib/util.py",
    )
    assert built.manifest.import_paths == ("modules/lib",)
    assert members(built.data)["modules/lib/shared/__init__.py"] == b"VALUE = 1"


def test_symlinks_are_not_packaged(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/main.py": "", "elsewhere/secret.txt": "s"})
    (app / "linked_dir").symlink_to(tmp_path / "elsewhere")
    (app / "linked_file.txt").symlink_to(tmp_path / "elsewhere" / "secret.txt")
    assert build(app).files == ("app/main.py",)


def test_towerfile_is_packaged_verbatim(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/main.py": ""}, "# a comment kept as-is")
    assert members(build(app).data)["Towerfile"] == (app / "Towerfile").read_bytes()


def test_shell_script_app(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Towerfile").write_text('[app]\nname = "sh"\nscript = "./run.sh"\n')
    (app / "run.sh").write_text("echo hi\n")
    built = build(app)
    assert built.manifest.invoke == "./run.sh"
    assert built.files == ("app/run.sh",)


def test_missing_script_file(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/other.py": ""})
    with pytest.raises(PackageError) as info:
        build(app)
    message = info.value.message
    assert "Script './main.py' not found in the package" in message
    assert "app/main.py" in message
    assert "source" in message


def test_script_in_excluded_place_is_not_found(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / ".venv").mkdir(parents=True)
    (app / "Towerfile").write_text('[app]\nname = "x"\nscript = ".venv/run.py"\n')
    (app / ".venv" / "run.py").write_text("")
    with pytest.raises(PackageError, match="not found in the package"):
        build(app)


def test_package_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 50 MiB tree would make the test slow; the limit is a plain constant.
    monkeypatch.setattr(package, "MAX_PACKAGE_BYTES", 64 * 1024)
    app = make_app(tmp_path, {"app/main.py": "", "app/blob.bin": os.urandom(256 * 1024)})
    with pytest.raises(PackageError) as info:
        build(app)
    message = info.value.message
    assert "larger than the 0.1 MiB limit" in message
    assert "Narrow [app].source" in message
    assert "app/blob.bin (0.2 MiB)" in message


# --------------------------------------------------------------------------- format


def test_manifest_json_exact(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {"app/main.py": "print(1)\n", "app/pkg/a.py": "A = 1\n", "lib/m.py": "M = 2\n"},
        'import_paths = ["../lib"]',
    )

    built = build(app)
    raw = members(built.data)["MANIFEST"].decode()

    checksum = expected_checksum(
        {
            "app/main.py": b"print(1)\n",
            "app/pkg/a.py": b"A = 1\n",
            "modules/lib/m.py": b"M = 2\n",
        }
    )
    assert raw == (
        '{"version":3,"invoke":"./main.py","parameters":[{"name":"GREETING",'
        '"description":"who","default":"world","hidden":false}],"schedule":null,'
        '"import_paths":["modules/lib"],"app_dir_name":"app","modules_dir_name":"modules",'
        f'"checksum":"{checksum}"}}'
    )
    assert list(json.loads(raw)) == [
        "version",
        "invoke",
        "parameters",
        "schedule",
        "import_paths",
        "app_dir_name",
        "modules_dir_name",
        "checksum",
    ]
    assert built.manifest.checksum == checksum
    assert built.sha256 == hashlib.sha256(built.data).hexdigest() == sha256_hex(built.data)
    assert built.size == len(built.data)


def test_schedule_is_never_in_manifest(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/main.py": ""}, 'schedule = "@daily"')
    assert build(app).manifest.schedule is None


def test_tar_headers_carry_no_build_machine_details(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/main.py": "", "app/run.sh": "echo"})
    os.chmod(app / "run.sh", 0o755)
    data = build(app).data

    assert data[:2] == b"\x1f\x8b"
    assert data[3] == 0  # FLG: no file name, no comment
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    for info in infos:
        assert info.isreg()
        assert (info.mode, info.uid, info.gid, info.mtime) == (0o644, 0, 0, 0)
        assert (info.uname, info.gname) == ("", "")
    raw_tar = gzip.decompress(data)
    assert raw_tar[257:265] == b"ustar  \0"  # GNU magic


def test_build_is_byte_deterministic(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {"app/main.py": "x", "app/a/b.py": "y", "lib/m.py": "z"},
        'import_paths = ["../lib"]',
    )
    first = build(app)
    second = build(app)
    assert first.data == second.data

    for path in [app / "main.py", app / "a" / "b.py", tmp_path / "lib" / "m.py"]:
        os.utime(path, (1_000_000, 1_000_000))
    os.chmod(app / "main.py", 0o600)
    third = build(app)
    assert third.data == first.data
    assert third.sha256 == first.sha256


def test_long_names_survive(tmp_path: Path) -> None:
    rel = "app/" + "/".join(["directory-with-a-long-name"] * 6) + "/module.py"
    app = make_app(tmp_path, {"app/main.py": "", rel: "L = 1"})
    built = build(app)
    assert rel in names(built.data)
    assert build(app).data == built.data


# --------------------------------------------------------------------------- reading


def test_inspect_package(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"app/main.py": ""})
    built = build(app)

    info = inspect_package(built.data, verify=True)

    assert info.manifest == built.manifest
    assert info.towerfile_text == (app / "Towerfile").read_text()
    assert read_manifest(built.data) == built.manifest
    assert built.manifest.parameters == (
        Parameter(name="GREETING", description="who", default="world"),
    )


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        version=3,
        invoke="./main.py",
        parameters=(Parameter(name="token", hidden=True),),
        import_paths=("modules/lib",),
        checksum="ab" * 32,
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json().encode()) == manifest


def test_version_2_is_accepted() -> None:
    manifest = Manifest(version=2, invoke="main.py", checksum="00")
    assert Manifest.from_json(manifest.to_json()).version == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"version":1,"invoke":"main.py"}', "version 1 is not supported"),
        ('{"invoke":"main.py"}', "version None is not supported"),
        ('{"version":3,"checksum":"00"}', "'invoke'"),
        ('{"version":3,"invoke":"main.py"}', "'checksum'"),
        ('{"version":3,"invoke":"m.py","checksum":"0","app_dir_name":".."}', "app_dir_name"),
        ('{"version":3,"invoke":"m.py","checksum":"0","parameters":[1]}', "parameters"),
    ],
)
def test_bad_manifest(text: str, needle: str) -> None:
    with pytest.raises(PackageError, match="MANIFEST") as info:
        Manifest.from_json(text)
    assert needle in info.value.message


def test_not_a_package() -> None:
    with pytest.raises(PackageError, match="not a valid Tower package"):
        read_manifest(b"this is not gzip")
    with pytest.raises(PackageError, match="not a valid Tower package"):
        read_manifest(gzip.compress(b"gzip but not a tar" * 100))


def test_truncated_package(tmp_path: Path) -> None:
    data = build(make_app(tmp_path, {"app/main.py": "x" * 10_000})).data
    with pytest.raises(PackageError, match="not a valid Tower package"):
        read_manifest(data[: len(data) // 2])


def test_missing_manifest() -> None:
    data = make_tar([file_entry("app/main.py", b"")])
    with pytest.raises(PackageError, match="no MANIFEST"):
        read_manifest(data)


# --------------------------------------------------------------------------- extraction


def test_extract_round_trip(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        {"app/main.py": "print(1)", "app/pkg/a.py": "A", "lib/m.py": "M"},
        'import_paths = ["../lib"]',
    )
    built = build(app)
    dest = tmp_path / "out"

    manifest = extract_package(built.data, dest)

    assert manifest == built.manifest
    assert (dest / "app" / "main.py").read_text() == "print(1)"
    assert (dest / "app" / "pkg" / "a.py").read_text() == "A"
    assert (dest / "modules" / "lib" / "m.py").read_text() == "M"
    assert (dest / "Towerfile").read_bytes() == (app / "Towerfile").read_bytes()
    assert Manifest.from_json((dest / "MANIFEST").read_text()) == manifest
    assert (dest / "app" / "main.py").stat().st_mode & 0o777 == 0o644


def test_tampered_file_fails_integrity_check(tmp_path: Path) -> None:
    built = build(make_app(tmp_path, {"app/main.py": "print('safe')"}))
    tampered = rewrite(built.data, {"app/main.py": b"print('evil')"})

    with pytest.raises(IntegrityError) as info:
        extract_package(tampered, tmp_path / "out")
    assert info.value.message.startswith("package integrity check failed: ")
    with pytest.raises(IntegrityError):
        inspect_package(tampered, verify=True)
    # Reading the MANIFEST alone does not verify.
    assert read_manifest(tampered) == built.manifest


def test_added_file_fails_integrity_check(tmp_path: Path) -> None:
    built = build(make_app(tmp_path, {"app/main.py": ""}))
    contents = members(built.data) | {"app/extra.py": b"import os"}
    data = make_tar([file_entry(n, b) for n, b in contents.items()])
    with pytest.raises(IntegrityError):
        extract_package(data, tmp_path / "out")


def test_metadata_is_not_covered_by_checksum(tmp_path: Path) -> None:
    built = build(make_app(tmp_path, {"app/main.py": ""}))
    data = rewrite(built.data, {"Towerfile": b"# edited\n"})
    assert inspect_package(data, verify=True).towerfile_text == "# edited\n"


@pytest.mark.parametrize("name", ["../evil.py", "app/../../evil.py", "/etc/evil"])
def test_path_traversal_rejected(tmp_path: Path, name: str) -> None:
    built = build(make_app(tmp_path, {"app/main.py": ""}))
    data = make_tar(
        [file_entry(n, b) for n, b in members(built.data).items()] + [file_entry(name, b"x")]
    )
    dest = tmp_path / "out" / "inner"

    with pytest.raises(PackageError, match="points outside the package"):
        extract_package(data, dest)
    with pytest.raises(PackageError, match="points outside the package"):
        inspect_package(data)
    assert not (tmp_path / "out" / "evil.py").exists()


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device"),
        (tarfile.FIFOTYPE, "device or FIFO"),
    ],
)
def test_links_and_devices_rejected(tmp_path: Path, kind: bytes, label: str) -> None:
    info = tarfile.TarInfo("app/link")
    info.type = kind
    info.linkname = "/etc/passwd"
    data = make_tar([file_entry("app/main.py", b""), (info, None)])
    with pytest.raises(PackageError, match=label):
        extract_package(data, tmp_path / "out")
    assert not (tmp_path / "out" / "app" / "link").exists()


def test_duplicate_entries_rejected(tmp_path: Path) -> None:
    data = make_tar([file_entry("app/a.py", b"1"), file_entry("./app/a.py", b"2")])
    with pytest.raises(PackageError, match="appears twice"):
        inspect_package(data)


def test_extract_never_overwrites(tmp_path: Path) -> None:
    built = build(make_app(tmp_path, {"app/main.py": ""}))
    dest = tmp_path / "out"
    (dest / "app").mkdir(parents=True)
    (dest / "app" / "main.py").write_text("existing")
    with pytest.raises(PackageError, match="already exists"):
        extract_package(built.data, dest)
    assert (dest / "app" / "main.py").read_text() == "existing"


def test_extract_refuses_symlinked_directory_in_dest(tmp_path: Path) -> None:
    built = build(make_app(tmp_path, {"app/main.py": ""}))
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "app").symlink_to(outside)
    with pytest.raises(PackageError, match="outside"):
        extract_package(built.data, dest)
    assert list(outside.iterdir()) == []


def test_directory_entries_and_dot_prefix_accepted(tmp_path: Path) -> None:
    """Archives from other builders may carry directory entries and ./ prefixes."""
    body = b"print(1)"
    manifest = Manifest(
        version=3, invoke="./main.py", checksum=expected_checksum({"app/main.py": body})
    )
    folder = tarfile.TarInfo("./app")
    folder.type = tarfile.DIRTYPE
    data = make_tar(
        [
            file_entry("./MANIFEST", manifest.to_json().encode()),
            (folder, None),
            file_entry("./app/main.py", body),
        ]
    )
    assert extract_package(data, tmp_path / "out") == manifest
    assert inspect_package(data).towerfile_text is None
