"""What the engine decodes: requests, their progress, the groups they are decoded in, and the events it emits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from aligned_llm.answer.constraint import Constraint, ConstraintState
from aligned_llm.methods.base import DecodingMethod, State
from aligned_llm.result import FinishReason, GenerationResult, TokenTrace, ToolCallDelta
from aligned_llm.streaming import TextAssembler


@dataclass
class EngineRequest:
    """One prompt: the token ids of each of its method's rows, and when to stop."""

    row_ids: Sequence[Sequence[int]]
    max_new_tokens: int
    stop_strings: Sequence[str] = ()
    seed: int | None = None
    constraint: Constraint | None = None
    """A grammar over the answer (tool calls, response format); see ``answer.constraint``."""


@dataclass(frozen=True)
class StepEvent:
    """Emitted after every step for each request that produced text or finished."""

    index: int
    delta: str
    generated_tokens: int
    result: GenerationResult | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Tool-call pieces decided at this step (set by ``answer.reader.AnswerReading``; ``delta`` is then prose)."""


@dataclass(frozen=True)
class Sampling:
    """How the final scores become a token: temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def penalizes(self) -> bool:
        """Whether tokens already generated are penalised (see :func:`sampling.penalize_repeats`)."""
        return self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


@dataclass(eq=False)
class Progress:
    """Decoding state of one request on the host side; ``index`` is its place in its submission."""

    index: int
    request: EngineRequest
    assembler: TextAssembler
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    trace: list[TokenTrace] | None = None
    finish_reason: FinishReason | None = None
    constraint: ConstraintState | None = None


class Group:
    """Requests of one submission admitted together: one method, one state, one token each per step."""

    def __init__(self, method: DecodingMethod, sampling: Sampling, items: list[Progress], owner: object = None) -> None:
        self.method = method
        self.sampling = sampling
        self.items = items
        self.owner = owner
        """Whoever submitted the requests (the scheduler's ticket); the engine never reads it."""
        self.state: State = {}
        self.step = 0
        self.tokens: torch.Tensor | None = None
        """The token each request chose last, fed to its rows at the next forward."""
        self.positions: dict[str, list[int]] = {}
        """Model name → the method's row positions that run on it, in row order."""
        for position, row in enumerate(method.rows):
            self.positions.setdefault(row.model, []).append(position)

    @property
    def row_count(self) -> int:
        return len(self.method.rows)

    def keep(self, slots: list[int]) -> None:
        """Keep only the requests at ``slots`` (their order), with their state and pending tokens."""
        self.items = [self.items[slot] for slot in slots]
        if not slots:
            self.state, self.tokens = {}, None
            return
        index = torch.tensor(slots, dtype=torch.long)
        if self.tokens is not None:
            self.tokens = self.tokens[index.to(self.tokens.device)]
        self.state = {name: value[index.to(value.device)] for name, value in self.state.items()}

    def surviving(self, finished: Sequence[Progress]) -> list[int]:
        """The slots of this group's requests that go on after ``finished`` leave."""
        gone = {id(item) for item in finished}
        return [slot for slot, item in enumerate(self.items) if id(item) not in gone]
