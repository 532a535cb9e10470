"""A first run is quiet: no progress bar for a fast load, no warning from the libraries underneath."""

from __future__ import annotations

import subprocess
import sys
import warnings

from aligned_llm import AlignedLLM


def test_loading_a_local_model_shows_no_progress_bar(tiny_dir, capfd):
    capfd.readouterr()
    AlignedLLM.from_pretrained(tiny_dir, device="cpu")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out
    assert captured.err == ""


def test_the_bundled_model_and_adapter_load_without_a_word(bundled_dir, capfd):
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llm = AlignedLLM.default(adapter="bundled", device="cpu")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert llm.has_adapter_pair


def test_transformers_progress_bars_elsewhere_are_left_alone(tiny_dir):
    from transformers.utils import logging as hf_logging

    seen = []
    previous = hf_logging.set_tqdm_hook(lambda factory, args, kwargs: seen.append(kwargs.get("desc")) or None)
    try:
        AlignedLLM.from_pretrained(tiny_dir, device="cpu")
        hf_logging.tqdm(range(1), desc="somebody else's bar")
    finally:
        hf_logging.set_tqdm_hook(previous)
    assert "Loading weights" not in seen and "somebody else's bar" in seen


def test_a_later_load_in_a_fresh_process_prints_nothing(bundled_dir):
    """A new process loading the (already converted) bundled model writes nothing to stdout or stderr."""
    load = "from aligned_llm import AlignedLLM; AlignedLLM.default(device='cpu')"
    done = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
