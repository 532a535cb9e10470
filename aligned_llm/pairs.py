"""Preference pairs from decoding: AAD as a data generator, as in the AAD paper.

chosen = the AAD answer, rejected = a nucleus sample of the DPO model; written as the
``{"prompt", "chosen", "rejected"}`` JSONL rows that DPO trainers (e.g. TRL) read.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm.auto import tqdm

from aligned_llm.errors import InvalidSettingError
from aligned_llm.prompts import normalize_prompts
from aligned_llm.settings import DecodeSettings

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferencePair:
    """One DPO training example: the prompt and two answers, the better one first."""

    prompt: str
    chosen: str
    rejected: str


def contrast_pairs(
    llm: AlignedLLM,
    prompts: Sequence[str],
    *,
    chosen: Mapping[str, Any],
    rejected: Mapping[str, Any],
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[PreferencePair]:
    """Decode every prompt twice and yield the pairs whose answers differ.

    ``chosen`` and ``rejected`` are ``generate`` settings; prompts run in batches. Settings
    are checked here, before the first prompt is decoded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidSettingError("batch_size", f"must be an integer >= 1, got {batch_size!r}")
    if not prompts or not all(isinstance(prompt, str) and prompt.strip() for prompt in prompts):
        raise InvalidSettingError("prompts", "must be a non-empty list of non-empty strings")
    normalize_prompts(list(prompts))
    for settings in (chosen, rejected):
        llm.method_for(DecodeSettings(**settings))
    return _decode_pairs(llm, prompts, chosen, rejected, batch_size, progress)


def _decode_pairs(
    llm: AlignedLLM,
    prompts: Sequence[str],
    chosen: Mapping[str, Any],
    rejected: Mapping[str, Any],
    batch_size: int,
    progress: bool,
) -> Iterator[PreferencePair]:
    bar = tqdm(total=len(prompts), desc="pairs", unit="prompt", disable=not progress)
    with bar:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            good = llm.generate(batch, **chosen)
            bad = llm.generate(batch, **rejected)
            for prompt, better, worse in zip(batch, good, bad, strict=True):
                if better.text.strip() != worse.text.strip():
                    yield PreferencePair(prompt, better.text.strip(), worse.text.strip())
            bar.update(len(batch))


def aad_settings(
    *, alpha: float = 0.1, temperature: float = 1.0, top_p: float = 0.9, seed: int = 0, max_new_tokens: int = 256
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(chosen, rejected)`` settings of AAD pairs: AAD (greedy, ``alpha``), a nucleus sample of the DPO model."""
    chosen = {"method": "aad", "alpha": alpha, "max_new_tokens": max_new_tokens}
    rejected = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_new_tokens": max_new_tokens}
    return chosen, rejected


def aad_pairs(
    llm: AlignedLLM,
    prompts: Sequence[str],
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    top_p: float = 0.9,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[PreferencePair]:
    """chosen = AAD (greedy, ``alpha``), rejected = a nucleus sample of the DPO model."""
    chosen, rejected = aad_settings(
        alpha=alpha, temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new_tokens
    )
    return contrast_pairs(llm, prompts, chosen=chosen, rejected=rejected, batch_size=batch_size, progress=progress)


def write_jsonl(pairs: Iterable[PreferencePair], path: str | os.PathLike[str]) -> int:
    """Write pairs as JSONL; return how many were written.

    Rows go, as they come, to a new hidden file beside ``path`` (``.<name>.<random>.partial``,
    created exclusively and never through a symlink), which replaces ``path`` atomically once
    every pair is written. If decoding fails midway, the rows so far stay in that file and a
    warning names it.
    """
    target = Path(path)
    handle, partial = _create_partial(target)
    count = 0
    try:
        with handle:
            for pair in pairs:
                handle.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
                handle.flush()
                count += 1
    except BaseException:
        if count:
            logger.warning("pairs stopped after %d rows; those rows are in %s", count, partial)
        else:
            partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return count


def _create_partial(target: Path) -> tuple[TextIO, Path]:
    """A new file beside ``target``: O_EXCL (never an existing file), O_NOFOLLOW (never a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        try:
            descriptor = os.open(partial, flags, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(descriptor, "w", encoding="utf-8"), partial
    raise FileExistsError(f"could not create a new temporary file beside {target}")
