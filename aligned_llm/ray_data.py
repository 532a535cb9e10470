"""Decoding a dataset of prompts on Ray Data: callable classes for ``Dataset.map_batches`` (the ``ray`` extra).

Each of the ``concurrency`` actors loads its own model from a :class:`~aligned_llm.spec.ModelSpec`
and decodes whole batches as one engine batch::

    ds = ray.data.read_json("prompts.jsonl")
    ds = ds.map_batches(BatchDecoder, fn_constructor_kwargs={"spec": ModelSpec(), "settings": {...}},
                        batch_size=16, concurrency=2)   # or compute=ActorPoolStrategy(size=2)

:func:`decode_dataset` and :func:`pair_dataset` do this after checking the settings in the
driver, so a bad setting fails before any actor starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from aligned_llm.pairs import contrast_pairs
from aligned_llm.settings import DecodeSettings
from aligned_llm.spec import ModelSpec

if TYPE_CHECKING:
    from ray.data import Dataset

Batch = dict[str, np.ndarray]


class BatchDecoder:
    """``map_batches`` callable: adds ``output_column`` (the text) and ``<output_column>_tokens`` to each batch."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Mapping[str, Any],
        prompt_column: str = "prompt",
        output_column: str = "text",
    ) -> None:
        self.llm = spec.load()
        self.settings = dict(settings)
        self.llm.method_for(DecodeSettings(**self.settings))
        self.prompt_column = prompt_column
        self.output_column = output_column

    def __call__(self, batch: Batch) -> Batch:
        prompts = [str(prompt) for prompt in batch[self.prompt_column]]
        results = self.llm.generate(prompts, **self.settings)
        return {
            **batch,
            self.output_column: np.array([result.text for result in results], dtype=object),
            f"{self.output_column}_tokens": np.array([result.output_tokens for result in results]),
        }


class PairDecoder:
    """``map_batches`` callable: the preference pairs of a batch of prompts (rows whose answers are equal are dropped).

    ``chosen``/``rejected`` are ``generate`` settings, as in :func:`aligned_llm.pairs.contrast_pairs`.
    """

    def __init__(
        self, spec: ModelSpec, chosen: Mapping[str, Any], rejected: Mapping[str, Any], prompt_column: str = "prompt"
    ) -> None:
        self.llm = spec.load()
        self.chosen = dict(chosen)
        self.rejected = dict(rejected)
        self.prompt_column = prompt_column

    def __call__(self, batch: Batch) -> Batch:
        prompts = [str(prompt) for prompt in batch[self.prompt_column]]
        pairs = list(
            contrast_pairs(
                self.llm, prompts, chosen=self.chosen, rejected=self.rejected, batch_size=len(prompts), progress=False
            )
        )
        return {
            "prompt": np.array([pair.prompt for pair in pairs], dtype=object),
            "chosen": np.array([pair.chosen for pair in pairs], dtype=object),
            "rejected": np.array([pair.rejected for pair in pairs], dtype=object),
        }


def _map_options(replicas: int, batch_size: int, num_cpus: float | None, num_gpus: float | None) -> dict[str, Any]:
    """``map_batches`` options: a fixed pool of ``replicas`` actors (Ray's newer spelling of ``concurrency=``)."""
    from ray.data import ActorPoolStrategy

    options: dict[str, Any] = {"compute": ActorPoolStrategy(size=replicas), "batch_size": batch_size}
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    if num_gpus is not None:
        options["num_gpus"] = num_gpus
    return options


def decode_dataset(
    dataset: Dataset,
    spec: ModelSpec,
    *,
    replicas: int = 1,
    batch_size: int = 8,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    prompt_column: str = "prompt",
    output_column: str = "text",
    **settings: Any,
) -> Dataset:
    """``dataset`` with the decoded text of its ``prompt_column``, by ``replicas`` actors (lazy, like any Dataset).

    ``settings`` are ``generate``'s (any registered method and its parameters), checked here first.
    """
    DecodeSettings(**settings)
    return dataset.map_batches(
        BatchDecoder,
        fn_constructor_kwargs={
            "spec": spec, "settings": settings, "prompt_column": prompt_column, "output_column": output_column,
        },
        **_map_options(replicas, batch_size, num_cpus, num_gpus),
    )  # fmt: skip


def pair_dataset(
    dataset: Dataset,
    spec: ModelSpec,
    *,
    chosen: Mapping[str, Any],
    rejected: Mapping[str, Any],
    replicas: int = 1,
    batch_size: int = 8,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    prompt_column: str = "prompt",
) -> Dataset:
    """The ``{"prompt", "chosen", "rejected"}`` rows of :func:`aligned_llm.pairs.contrast_pairs`, decoded on Ray."""
    for settings in (chosen, rejected):
        DecodeSettings(**settings)
    return dataset.map_batches(
        PairDecoder,
        fn_constructor_kwargs={"spec": spec, "chosen": chosen, "rejected": rejected, "prompt_column": prompt_column},
        **_map_options(replicas, batch_size, num_cpus, num_gpus),
    )
