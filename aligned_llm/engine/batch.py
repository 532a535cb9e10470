"""Groups whose rows share lanes: the running batch, and the cohorts prefilled before they join it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from aligned_llm.engine.kv import KVLane, KVStore, Prefill
from aligned_llm.engine.requests import Group

if TYPE_CHECKING:
    from aligned_llm.engine.engine import Engine


def _kept_rows(groups: list[Group], name: str, survivors: Mapping[Group, list[int]]) -> list[int]:
    """Indices of the rows on model ``name`` that stay when each group keeps its surviving slots (all if unnamed)."""
    rows, offset = [], 0
    for group in groups:
        width = len(group.positions.get(name, ()))
        slots = survivors.get(group, range(len(group.items)))
        rows.extend(offset + slot * width + row for slot in slots for row in range(width))
        offset += len(group.items) * width
    return rows


class Batch:
    """Groups whose rows share lanes: each lane holds the groups' rows in group order, request by request."""

    def __init__(self, groups: list[Group], lanes: dict[str, KVLane], device: torch.device, store: KVStore) -> None:
        self.groups = groups
        self.lanes = lanes
        self.device = device
        self.store = store

    @property
    def mergeable(self) -> bool:
        return all(lane.mergeable for lane in self.lanes.values())

    def group_logits(self, lane_logits: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Split each lane's logits ``[rows, V]`` into each group's ``[requests, method rows, V]``."""
        offsets = dict.fromkeys(lane_logits, 0)
        split = []
        for group in self.groups:
            requests = len(group.items)
            if len(group.positions) == 1:
                ((name, positions),) = group.positions.items()
                size = requests * len(positions)
                part = lane_logits[name][offsets[name] : offsets[name] + size].to(self.device)
                split.append(part.view(requests, len(positions), -1))
                offsets[name] += size
                continue
            logits: torch.Tensor | None = None
            for name, positions in group.positions.items():
                size = requests * len(positions)
                part = lane_logits[name][offsets[name] : offsets[name] + size].to(self.device)
                offsets[name] += size
                if logits is None:
                    logits = part.new_empty((requests, group.row_count, part.shape[-1]))
                logits[:, positions] = part.view(requests, len(positions), -1)
            split.append(logits)
        return split

    def forward(self) -> list[torch.Tensor]:
        """One decode step: each group's pending tokens into its rows on every lane; each group's next logits."""
        lane_logits = {}
        for name, lane in self.lanes.items():
            tokens = [
                group.tokens.repeat_interleave(len(group.positions[name]))
                for group in self.groups
                if name in group.positions
            ]
            lane_logits[name] = lane.step(torch.cat(tokens))
        return self.group_logits(lane_logits)

    def keep(self, survivors: Mapping[Group, list[int]]) -> None:
        """Keep, per group, the requests at the given slots (groups not named keep all); drop empty groups and lanes."""
        for name, lane in list(self.lanes.items()):
            rows = _kept_rows(self.groups, name, survivors)
            if len(rows) == lane.rows:
                continue
            lane.keep(rows)
            if not rows:
                del self.lanes[name]
        for group, slots in survivors.items():
            group.keep(list(slots))
        self.groups = [group for group in self.groups if group.items]

    def extend(self, other: Batch) -> None:
        """Add ``other``'s groups and rows after this batch's (their caches must be mergeable)."""
        for name, lane in other.lanes.items():
            if name in self.lanes:
                self.lanes[name].extend(lane)
            else:
                self.lanes[name] = self.store.adopt(lane)
        self.groups = self.groups + other.groups


class Cohort:
    """Groups prefilled together, one chunk per model at a time, before they join a running batch."""

    def __init__(self, engine: Engine, groups: list[Group]) -> None:
        self.engine = engine
        self.groups = groups
        keep_all = any(group.method.needs_prompt_logits for group in groups)
        self.prefills: dict[str, Prefill] = {}
        for name in dict.fromkeys(name for group in groups for name in group.positions):
            prompts, adapters, spans = [], [], []
            for group in groups:
                for item in group.items:
                    for position in group.positions.get(name, ()):
                        prompts.append(item.request.row_ids[position])
                        adapters.append(group.method.rows[position].adapter)
                        spans.append(len(item.request.row_ids[position]) + item.request.max_new_tokens)
            self.prefills[name] = Prefill(engine.models[name], prompts, adapters, spans, engine.pad_token_id, keep_all)

    @property
    def done(self) -> bool:
        return all(prefill.done for prefill in self.prefills.values())

    def advance(self) -> None:
        """One chunk forward on each model whose rows are not all prefilled."""
        for prefill in self.prefills.values():
            if not prefill.done:
                prefill.advance()

    def keep(self, survivors: Mapping[Group, list[int]]) -> None:
        """Keep, per group, the requests at the given slots before the prefill ends; drop empty groups."""
        for name, prefill in list(self.prefills.items()):
            rows = _kept_rows(self.groups, name, survivors)
            if not rows:
                del self.prefills[name]
            elif len(rows) < len(prefill.adapters):
                prefill.keep(rows)
        for group, slots in survivors.items():
            group.keep(list(slots))
        self.groups = [group for group in self.groups if group.items]

    def finish(self) -> tuple[Batch, list[torch.Tensor]]:
        """The prefilled rows as a batch to join the running one, and each group's first logits.

        Each group's method state is initialised from them.
        """
        lanes, last, mean = {}, {}, {}
        for name, prefill in self.prefills.items():
            lanes[name], last[name], mean[name] = prefill.finish()
        batch = Batch(self.groups, lanes, self.engine.device, self.engine.store)
        logits = batch.group_logits(last)
        prompt_logits = batch.group_logits(mean) if all(value is not None for value in mean.values()) else None
        with torch.inference_mode():
            for slot, group in enumerate(self.groups):
                wanted = prompt_logits is not None and group.method.needs_prompt_logits
                group.state = group.method.initial_state(prompt_logits[slot] if wanted else None)
        return batch, logits
