"""Folders written once into the user cache, atomically, and checked before every use.

A folder is built in a staging folder beside its target, its files are synced, a manifest of
their sizes and sha256 hashes is written last, and only then is the staging folder renamed to
the target. A target whose files do not match its manifest (or that has none) is damaged and is
built again. Staging folders left behind by dead processes are removed. A lock file lets one
process build while the others wait.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from aligned_llm.errors import InvalidSettingError

logger = logging.getLogger(__name__)

MANIFEST = "aligned-llm-manifest.json"
MANIFEST_FORMAT = 1
STALE_AFTER_S = 24 * 3600
"""A staging folder older than this is removed even when its writer cannot be checked (another host)."""
_HASH_CHUNK = 1 << 22
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|trash)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-")
_verified: dict[Path, tuple[tuple[str, int, int, int], ...]] = {}
"""Folders whose hashes matched in this process, with the file signatures they had then."""


class CacheNotWritableError(OSError):
    """The cache folder cannot be written (read-only, no permission, disk full)."""


def cache_root(variable: str, default: Path) -> Path:
    """The cache folder: the environment ``variable`` when set, else ``default``; never a file."""
    override = os.environ.get(variable)
    root = Path(override).expanduser() if override else default
    if root.exists() and not root.is_dir():
        raise InvalidSettingError(
            variable, f"names {str(root)!r}, which is a file: it must name a folder (or be unset)"
        )
    return root


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _signature(folder: Path, names: list[str]) -> tuple[tuple[str, int, int, int], ...]:
    stats = [(name, (folder / name).stat()) for name in [*names, MANIFEST]]
    return tuple((name, stat.st_size, stat.st_mtime_ns, stat.st_ino) for name, stat in stats)


def damage(folder: Path, required: tuple[str, ...]) -> str | None:
    """What is wrong with ``folder`` (``None`` when every file matches its manifest).

    Sizes are checked on every call and sha256 hashes once per process, again whenever a file's
    size, modification time or inode changed since they last matched.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            return f"{MANIFEST} has an unknown format"
    except FileNotFoundError:
        return f"it has no {MANIFEST} (an interrupted or older conversion)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} is unreadable ({error})"
    missing = [name for name in required if name not in files]
    if missing:
        return f"{MANIFEST} does not list {missing}"
    for name, entry in files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != entry.get("size"):
            return f"{name} is {size} bytes, the manifest says {entry.get('size')}"
    signature = _signature(folder, sorted(files))
    if _verified.get(folder) == signature:
        return None
    for name, entry in files.items():
        if _sha256(folder / name) != entry.get("sha256"):
            return f"{name} does not match its sha256 in the manifest (its content changed)"
    _verified[folder] = signature
    return None


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_manifest(folder: Path) -> None:
    """Sync every file in ``folder``, then write the manifest of their sizes and hashes (last)."""
    names = sorted(path.name for path in folder.iterdir() if path.is_file() and path.name != MANIFEST)
    files = {}
    for name in names:
        _fsync(folder / name)
        files[name] = {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
    manifest = folder / MANIFEST
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1), encoding="utf-8")
    _fsync(manifest)
    _fsync(folder)
    _verified[folder] = _signature(folder, names)


def _writer_is_gone(host: str, pid: int) -> bool:
    """Whether the process that made a staging folder has ended (only knowable on this host)."""
    if host != _host_tag() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_stale_staging(root: Path, target_name: str) -> list[Path]:
    """Remove the staging and trash folders of ``target_name`` whose writer is gone; return them."""
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING.match(entry.name)
        if match is None or match["name"] != target_name or not entry.is_dir():
            continue
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if _writer_is_gone(match["host"], int(match["pid"])) or age > STALE_AFTER_S:
            logger.info("removing %s, left behind by an interrupted conversion", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _new_staging(root: Path, target_name: str, kind: str = "staging") -> Path:
    """A fresh folder beside the target, named after this host and process so it can be cleaned up."""
    return Path(tempfile.mkdtemp(prefix=f".{target_name}.{kind}-{_host_tag()}-{os.getpid()}-", dir=root))


def _not_writable(root: Path, error: OSError) -> CacheNotWritableError:
    return CacheNotWritableError(error.errno or errno.EACCES, f"cannot write to {root}: {error.strerror or error}")


def ensure_folder(target: Path, required: tuple[str, ...], build: Callable[[Path], None]) -> Path:
    """``target`` once it is complete, building it with ``build(staging)`` when missing or damaged.

    Raises :class:`CacheNotWritableError` before calling ``build`` when the cache cannot be
    written, so the caller can build elsewhere without having wasted the work.
    """
    root = target.parent
    if root.is_dir():
        remove_stale_staging(root, target.name)
    if target.is_dir() and damage(target, required) is None:
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / f".{target.name}.lock"))
        lock.acquire()
    except OSError as error:
        raise _not_writable(root, error) from error
    try:
        remove_stale_staging(root, target.name)
        problem = damage(target, required) if target.exists() or target.is_symlink() else None
        if target.is_dir() and problem is None:
            return target
        if problem is not None:
            logger.warning("the cached %s is damaged (%s); building it again", target, problem)
        try:
            staging = _new_staging(root, target.name)
        except OSError as error:
            raise _not_writable(root, error) from error
        try:
            build(staging)
            write_manifest(staging)
            _swap_in(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; a damaged ``target`` is moved aside first, then removed."""
    trash = None
    if target.exists() or target.is_symlink():
        trash = _new_staging(target.parent, target.name, "trash")
        os.rename(target, trash / target.name)
    signature = _verified.pop(staging)
    os.rename(staging, target)
    _verified[target] = signature
    _fsync(target.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
