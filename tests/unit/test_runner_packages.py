"""The runner's cache of verified, extracted packages."""

from __future__ import annotations

from pathlib import Path

from tower.core.package import Manifest
from tower.runner.packages import PackageCache


def _tree(root: Path, text: str) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text(text)
    return root


def test_a_kept_package_is_copied_with_its_manifest(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    manifest = Manifest(version=3, invoke="main.py", checksum="c1")
    source = _tree(tmp_path / "first", "print(1)\n")
    cache.keep("sha-1", source, manifest)
    (source / "app" / "main.py").write_text("changed by the app\n")

    assert cache.copy_to("sha-1", tmp_path / "second") == manifest
    assert (tmp_path / "second" / "app" / "main.py").read_text() == "print(1)\n"
    assert cache.copy_to("sha-2", tmp_path / "third") is None
    assert not (tmp_path / "third").exists()


def test_only_the_most_recently_used_are_kept(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache", most=2)
    manifest = Manifest(version=3, invoke="main.py")
    for name in ("a", "b"):
        cache.keep(name, _tree(tmp_path / name, name), manifest)
    assert cache.copy_to("a", tmp_path / "a-again") is not None  # a is now the most recent
    cache.keep("c", _tree(tmp_path / "c", "c"), manifest)
    assert cache.copy_to("b", tmp_path / "b-again") is None
    assert sorted(p.name for p in cache.root.iterdir()) == ["a", "c"]


def test_runners_sharing_a_home_keep_their_own_and_a_gone_one_is_cleaned_up(
    tmp_path: Path,
) -> None:
    manifest = Manifest(version=3, invoke="main.py")
    first = PackageCache(tmp_path / "cache")
    first.keep("sha", _tree(tmp_path / "t", "first"), manifest)
    second = PackageCache(tmp_path / "cache")  # another runner process, same home
    assert second.copy_to("sha", tmp_path / "copy-2") is None, "not verified by this one"
    second.keep("sha", _tree(tmp_path / "u", "second"), manifest)
    assert first.copy_to("sha", tmp_path / "copy-1") == manifest
    assert (tmp_path / "copy-1" / "app" / "main.py").read_text() == "first"

    gone = first.root
    first._held._lock_file.close()  # its process ended: the flock is released
    PackageCache(tmp_path / "cache")
    assert not gone.exists() and second.root.exists()


def test_a_package_that_cannot_be_kept_costs_the_run_nothing(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache")
    cache.keep("sha", tmp_path / "no-such-tree", Manifest(version=3, invoke="main.py"))
    assert cache.copy_to("sha", tmp_path / "copy") is None
    assert list(cache.root.iterdir()) == []


def test_a_package_is_copied_into_a_skeleton_exactly(tmp_path: Path) -> None:
    """A run dir's package skeleton (directories only, tower.runner.workdirs): the
    directories the package has are used, the others go."""
    cache = PackageCache(tmp_path / "cache")
    manifest = Manifest(version=3, invoke="main.py")
    source = _tree(tmp_path / "first", "print(1)\n")
    (source / "MANIFEST").write_text("{}")
    cache.keep("sha-1", source, manifest)
    skeleton = tmp_path / "dest"
    (skeleton / "app" / "main.py").mkdir(parents=True)  # a directory where a file goes
    (skeleton / "old" / "deep").mkdir(parents=True)
    app_inode = (skeleton / "app").stat().st_ino

    assert cache.copy_to("sha-1", skeleton) == manifest
    assert sorted(str(p.relative_to(skeleton)) for p in skeleton.rglob("*")) == [
        "MANIFEST",
        "app",
        "app/main.py",
    ]
    assert (skeleton / "app" / "main.py").read_text() == "print(1)\n"
    assert (skeleton / "app").stat().st_ino == app_inode


def test_a_skeleton_goes_when_the_package_is_not_kept(tmp_path: Path) -> None:
    """The run then opens its package into a directory that is not there."""
    cache = PackageCache(tmp_path / "cache")
    skeleton = tmp_path / "dest"
    (skeleton / "app").mkdir(parents=True)
    assert cache.copy_to("sha-unknown", skeleton) is None
    assert not skeleton.exists()
