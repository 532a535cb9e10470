"""The converted bundled model's cache heals itself: interrupted, damaged, read-only or misnamed caches.

The slow step of a conversion (dequantising the GGUF, ≈20-50 s) is replaced here by loading the
already converted model from the session's cache, so every test runs the real staging, manifest
and swap code in its own ``ALIGNED_LLM_CACHE`` in a few seconds. The real dequantisation runs
once per session, in the ``bundled_dir`` fixture (when the user cache is empty).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from aligned_llm import AlignedLLM, InvalidSettingError, loading
from aligned_llm import cache as cache_module
from aligned_llm.cache import MANIFEST, damage

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ALIGNED_LLM_CACHE", str(root))
    return root


@pytest.fixture
def conversions(bundled_dir, monkeypatch) -> list[Path]:
    """Replace the slow GGUF dequantisation by a load of the converted model; record each call."""
    calls: list[Path] = []

    def dequantise(gguf: Path):
        calls.append(gguf)
        model = AutoModelForCausalLM.from_pretrained(bundled_dir, local_files_only=True)
        return model, AutoTokenizer.from_pretrained(bundled_dir, local_files_only=True)

    monkeypatch.setattr(loading, "_dequantise", dequantise)
    return calls


@pytest.fixture
def cached(cache, bundled_dir) -> Path:
    """A complete cached copy of the converted model, as a first conversion leaves it."""
    target = cache / bundled_dir.name
    shutil.copytree(bundled_dir, target)
    return target


def test_the_session_conversion_has_a_manifest_of_every_file(bundled_dir):
    manifest = json.loads((bundled_dir / MANIFEST).read_text())
    files = {path.name for path in bundled_dir.iterdir() if path.name != MANIFEST}
    assert set(manifest["files"]) == files
    assert manifest["files"]["model.safetensors"]["sha256"] == _sha256(bundled_dir / "model.safetensors")
    assert damage(bundled_dir, loading.BUNDLED_REQUIRED) is None


KILL_BEFORE_MANIFEST = """
import os, signal, sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from aligned_llm import cache, loading

pristine = Path(sys.argv[1])
loading._dequantise = lambda gguf: (
    AutoModelForCausalLM.from_pretrained(pristine, local_files_only=True),
    AutoTokenizer.from_pretrained(pristine, local_files_only=True),
)
written = cache.write_manifest

def killed_before_the_manifest(folder):
    assert (folder / "model.safetensors").stat().st_size > 0
    os.kill(os.getpid(), signal.SIGKILL)

cache.write_manifest = killed_before_the_manifest
loading.bundled_model_dir()
"""


def test_an_interrupted_conversion_is_cleaned_up_and_redone(cache, bundled_dir, conversions):
    """A process killed (SIGKILL) after writing the weights but before the manifest leaves nothing usable."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   "HF_HUB_OFFLINE": "1"}  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_BEFORE_MANIFEST), str(bundled_dir)],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == -9, child.stderr
    target = cache / bundled_dir.name
    leftovers = [path for path in cache.iterdir() if path.is_dir()]
    assert not target.exists()
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").stat().st_size > 100 * MIB

    assert loading.bundled_model_dir() == target
    assert [path for path in cache.iterdir() if path.is_dir()] == [target], "the dead process's folder is gone"
    assert len(conversions) == 1
    assert damage(target, loading.BUNDLED_REQUIRED) is None
    assert _sha256(target / "model.safetensors") == _sha256(bundled_dir / "model.safetensors")


def _zero_4_mib(target: Path) -> None:
    with open(target / "model.safetensors", "r+b") as handle:
        handle.seek(100 * MIB)
        handle.write(bytes(4 * MIB))


def _truncate(target: Path) -> None:
    with open(target / "model.safetensors", "r+b") as handle:
        handle.truncate(200 * MIB)


DAMAGE = {
    "4 MiB of zeros in the weights": (_zero_4_mib, "model.safetensors does not match its sha256"),
    "truncated weights": (_truncate, "model.safetensors is 209715200 bytes"),
    "no manifest": (lambda target: (target / MANIFEST).unlink(), f"no {MANIFEST}"),
    "garbage manifest": (lambda target: (target / MANIFEST).write_text("{"), f"{MANIFEST} is unreadable"),
    "a file missing": (lambda target: (target / "tokenizer.json").unlink(), "tokenizer.json is missing"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_is_found_and_named(cached, kind):
    assert damage(cached, loading.BUNDLED_REQUIRED) is None
    corrupt, message = DAMAGE[kind]
    corrupt(cached)
    assert message in damage(cached, loading.BUNDLED_REQUIRED)


@pytest.mark.parametrize("kind", ["truncated weights", "no manifest"])
def test_a_damaged_cache_is_converted_again(cached, bundled_dir, conversions, kind):
    assert loading.bundled_model_dir() == cached and not conversions, "an intact cache is used as it is"
    pristine = _sha256(bundled_dir / "model.safetensors")
    DAMAGE[kind][0](cached)
    assert loading.bundled_model_dir() == cached
    assert len(conversions) == 1
    assert _sha256(cached / "model.safetensors") == pristine
    assert damage(cached, loading.BUNDLED_REQUIRED) is None
    assert sorted(path.name for path in cached.parent.iterdir() if path.is_dir()) == [cached.name]


def test_zeroed_weights_are_healed_and_the_model_writes_as_before(cached, bundled_llm, conversions):
    """4 MiB of zeros change the text silently unless the cache is checked: here it heals first."""
    assert loading.bundled_model_dir() == cached and not conversions
    _zero_4_mib(cached)
    healed = AlignedLLM.default(device="cpu")
    prompt = "Tell me about the moon."
    assert len(conversions) == 1
    assert healed.generate(prompt, max_new_tokens=8).text == bundled_llm.generate(prompt, max_new_tokens=8).text


def test_concurrent_first_uses_convert_once(cache, bundled_dir, conversions):
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(loading.bundled_model_dir())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache / bundled_dir.name] * 3
    assert len(conversions) == 1


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_staging_folders_of_gone_writers_are_removed(cached, conversions):
    host = cache_module._host_tag()
    dead = cached.parent / f".{cached.name}.staging-{host}-{_dead_pid()}-abc"
    alive = cached.parent / f".{cached.name}.staging-{host}-{os.getpid()}-def"
    old_elsewhere = cached.parent / f".{cached.name}.trash-00000000-1-ghi"
    recent_elsewhere = cached.parent / f".{cached.name}.staging-00000000-1-jkl"
    unrelated = cached.parent / ".someone-else.staging-00000000-1-mno"
    for folder in (dead, alive, old_elsewhere, recent_elsewhere, unrelated):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(bytes(MIB))
    day_ago = time.time() - 2 * cache_module.STALE_AFTER_S
    os.utime(old_elsewhere, (day_ago, day_ago))
    assert loading.bundled_model_dir() == cached
    assert not dead.exists() and not old_elsewhere.exists()
    assert alive.exists() and recent_elsewhere.exists() and unrelated.exists()
    assert not conversions


@pytest.fixture
def read_only(monkeypatch):
    """Make writes under a folder fail as on a read-only file system (chmod does not stop root)."""

    def protect(root: Path) -> None:
        root = root.resolve()
        real_mkdir, real_open = os.mkdir, os.open

        def inside(path) -> bool:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)

        def mkdir(path, *args, **kwargs):
            if inside(path):
                raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
            return real_mkdir(path, *args, **kwargs)

        def open_(path, flags, *args, **kwargs):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", open_)

    return protect


def test_a_read_only_cache_is_detected_before_converting(cache, bundled_dir, conversions, read_only):
    cache.mkdir()
    read_only(cache)
    with pytest.warns(RuntimeWarning, match="could not write its cache") as warned:
        folder = loading.bundled_model_dir()
    assert len(warned) == 1 and "ALIGNED_LLM_CACHE" in str(warned[0].message)
    assert len(conversions) == 1, "converted once, straight into the fallback folder"
    assert not folder.is_relative_to(cache) and (folder / "model.safetensors").is_file()
    assert list(cache.iterdir()) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loading.bundled_model_dir() == folder, "the same process reuses it, without a second warning"
    assert len(conversions) == 1
    assert AlignedLLM.from_pretrained(folder, device="cpu").generate("Hi", max_new_tokens=2).output_tokens >= 1


def test_a_read_only_cache_with_an_intact_model_is_used_silently(cached, conversions, read_only):
    read_only(cached.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loading.bundled_model_dir() == cached
    assert not conversions


def test_a_cache_variable_naming_a_file_is_refused(tmp_path, monkeypatch, conversions):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("ALIGNED_LLM_CACHE", str(tmp_path / "file"))
    with pytest.raises(InvalidSettingError, match="is a file") as raised:
        AlignedLLM.default()
    assert raised.value.parameter == "ALIGNED_LLM_CACHE"
    assert not conversions
