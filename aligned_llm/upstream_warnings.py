"""Warnings that third-party libraries raise on the library's own calls, and that a user cannot act on.

peft 0.21 (the newest release) reads ``model.is_gradient_checkpointing`` when it wraps a model,
which transformers 5.25 deprecates with a ``FutureWarning`` on every adapter load. The library
silences exactly that message, only around its own peft calls; the suite turns every other
transformers deprecation warning into an error (``pyproject.toml``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

PEFT_READS_GRADIENT_CHECKPOINTING = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft's ``PeftModel`` construction: without transformers' warning about peft's own attribute read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_READS_GRADIENT_CHECKPOINTING, category=FutureWarning)
        yield
