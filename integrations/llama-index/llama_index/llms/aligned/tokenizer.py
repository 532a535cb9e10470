"""Token counting with the model's own tokenizer, for ``Settings.tokenizer`` and token counters."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from aligned_llm import AlignedLLM

from llama_index.llms.aligned.base import AlignedHF


def model_tokenizer(llm: AlignedHF | AlignedLLM) -> Callable[[str], list[int]]:
    """``text -> token ids`` with the model's tokenizer and no special tokens.

    LlamaIndex sizes chunks and packs prompts with ``Settings.tokenizer`` (tiktoken by
    default); set it to this so its counts are the model's: ``Settings.tokenizer =
    model_tokenizer(llm)``. Also fits ``TokenCountingHandler(tokenizer=...)``.
    """
    core = llm.core if isinstance(llm, AlignedHF) else llm
    return partial(core.tokenizer.encode, add_special_tokens=False)
