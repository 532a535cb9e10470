"""What the engine sees of an answer: a per-request grammar that masks the method's scores, and when it ends.

A constraint is a layer over any decoding method: the method scores every token, the request's
grammar masks the tokens it does not allow to -inf, the engine chooses a token, and the
grammar's matcher is advanced with it.

Inside a *constrained span* (a tool call, or the whole answer under a response format,
``tool_choice="required"``/a named tool, or the ``generic`` format's call-or-answer envelope),
``constrained_alignment`` decides what the method does: ``"steer"`` keeps its scores; ``"off"``
replaces them with the first row's plain log-probs, so a principle such as "talk like a pirate"
cannot rewrite argument values.

Four rules beyond the grammar:

- **the calibrated decision** (``generic`` format, ``"auto"``): at the token that chooses
  between the call branch and the answer branch, the log-probability mass of each branch's
  tokens under the first unguided row (the model without the principle; the first row when
  all are guided) is compared, the call branch's raised by ``tool_call_bias``; the losing
  branch's tokens are masked;
- **no call that cannot finish**: once a call is complete, no further call is started when
  fewer than ``min_call_tokens`` tokens of ``max_new_tokens`` are left;
- **no repeated call**: an answer whose calls so far hold the same call twice, or a call this
  turn of the conversation already made, ends there (small models otherwise repeat a call until
  the length limit, and agents loop; the reader drops the repeats and, when nothing is left,
  asks for a prose answer);
- **no answer that cannot complete** (``must_complete``: a response format, or
  ``tool_choice="required"``/a named tool): until the answer holds a complete call, after every
  token the fewest tokens that can write what the grammar forces next (``answer.budget``; up to
  where a call completes, the reader keeping complete calls of a cut block) are compared with
  the tokens left; when they do not fit, the answer ends at once (:attr:`ConstraintState.cut`,
  read back as ``finish_reason="length"``) instead of spending the rest of ``max_new_tokens`` on
  an answer that would be cut anyway. Before any work, a request whose answer cannot even start
  to fit is refused (:meth:`Constraint.tokens_needed_first`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aligned_llm.answer.budget import TokenSpelling
from aligned_llm.answer.formats import ToolFormat
from aligned_llm.answer.formats.generic import DECISION_PREFIX
from aligned_llm.answer.history import call_key
from aligned_llm.answer.spec import ConstrainedAlignment, ToolSpec


def _xgrammar() -> Any:
    import xgrammar

    return xgrammar


DECISION_POINTS = tuple(DECISION_PREFIX[:size].encode() for size in range(len(DECISION_PREFIX) + 1))
"""The texts an answer can have written before it commits to a branch."""


def committing_tokens(token_bytes: Sequence[bytes], written: bytes, opening: str) -> torch.Tensor:
    """``[V]`` bool: the tokens that, after ``written``, commit the answer to the branch that opens with ``opening``."""
    target = opening.encode()
    committed = []
    for piece in token_bytes:
        text = written + piece
        committed.append(len(text) > len(DECISION_PREFIX) and (target.startswith(text) or text.startswith(target)))
    return torch.tensor(committed, dtype=torch.bool)


@dataclass(frozen=True)
class Decision:
    """The calibrated call-or-answer choice: per text written so far, each branch's committing tokens; the margin."""

    call_tokens: dict[bytes, torch.Tensor]
    answer_tokens: dict[bytes, torch.Tensor]
    bias: float
    opening_token: int | None = None
    """The token that writes ``{"`` whole, when the vocabulary has one: the answer opens with it, so the decision is
    always taken at the same point whatever the method scores."""
    row: int = 0
    """The row whose log-probs decide: the method's first row without guidance (the model's own choice, not the
    principle's), or its first row when every row is guided."""


@dataclass(frozen=True)
class Constraint:
    """What one request carries: its compiled grammar, where its constrained spans are, and its rules.

    ``grammar`` ``None``: nothing is masked (``constrained=False``); ``whole``: the whole answer
    is a span; ``fmt``: the tool format whose call blocks are spans (``None``: no calls);
    ``decision``: the calibrated choice (``generic`` under ``"auto"``); ``separator_tokens``:
    tokens that would start another call, masked when ``min_call_tokens`` no longer fit;
    ``must_complete``: the answer is only of use complete, so it ends as soon as ``spelling``
    shows that the tokens left cannot complete it.
    """

    grammar: Any = None
    whole: bool = False
    alignment: ConstrainedAlignment = "steer"
    token_bytes: Sequence[bytes] = ()
    fmt: ToolFormat | None = None
    tools: tuple[ToolSpec, ...] = ()
    decision: Decision | None = None
    separator_tokens: torch.Tensor | None = None
    min_call_tokens: int = 0
    max_new_tokens: int = 0
    earlier: frozenset[str] = frozenset()
    """Calls this turn of the conversation already made (``history.call_key``): writing one again ends the answer."""
    must_complete: bool = False
    spelling: TokenSpelling | None = None

    def protect(self, text: str) -> str:
        """``text`` with its constrained spans blanked: stop strings are not searched there."""
        if self.whole:
            return "\0" * len(text)
        if self.fmt is None:
            return text
        return protect_blocks(text, self.fmt)

    def start(self) -> ConstraintState | None:
        """Fresh per-request decoding state, or ``None`` when nothing is masked."""
        return None if self.grammar is None else ConstraintState(self)

    def tokens_needed_first(self) -> int:
        """A lower bound of the tokens any complete answer takes (0 when the answer need not complete)."""
        state = self.start()
        return 0 if state is None or not self.must_complete else state.tokens_needed()


def protect_blocks(text: str, fmt: ToolFormat) -> str:
    """``text`` with every call block of ``fmt`` (from its opening to its close or the end) blanked."""
    start = text.find(fmt.open)
    while start != -1:
        close = -1 if fmt.close is None else text.find(fmt.close, start + len(fmt.open))
        end = len(text) if close == -1 else close + len(fmt.close or "")
        text = text[:start] + "\0" * (end - start) + text[end:]
        start = text.find(fmt.open, end)
    return text


class ConstraintState:
    """A request's grammar matcher, and where decoding is: inside a constrained span or not."""

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.matcher = _xgrammar().GrammarMatcher(constraint.grammar)
        self.bitmask_width = (constraint.grammar.tokenizer_info.vocab_size + 31) // 32
        self.repeated_call = False
        self.decided: str | None = None
        """``"call"`` or ``"answer"`` once the calibrated decision is taken."""
        self.call_log_odds: float | None = None
        """The decision's log P(call branch) − log P(answer branch), before the bias."""
        self.generated = 0
        self.cut = False
        """The answer was ended because the tokens left of ``max_new_tokens`` cannot complete it."""
        self._text = b""
        self._calls = 0

    @property
    def _open(self) -> bytes:
        return self.constraint.fmt.open.encode() if self.constraint.fmt else b""

    @property
    def written(self) -> bytes:
        """The answer's bytes so far."""
        return self._text

    @property
    def in_span(self) -> bool:
        """Whether the next token is inside a constrained span."""
        fmt = self.constraint.fmt
        if self.constraint.whole:
            return True
        if fmt is None:
            return False
        start = self._text.rfind(self._open)
        if start == -1:
            return False
        return fmt.close is None or self._text.find(fmt.close.encode(), start) == -1

    @property
    def steers(self) -> bool:
        """Whether the method's scores are used at this step."""
        return self.constraint.alignment == "steer" or not self.in_span

    @property
    def finished(self) -> bool:
        """The grammar ended (a stop token was accepted), the answer repeated a call, or it cannot complete."""
        return self.repeated_call or self.cut or self.matcher.is_terminated()

    @property
    def deciding(self) -> bool:
        """Whether the next token may take the calibrated decision."""
        return self.constraint.decision is not None and self.decided is None and self._text in DECISION_POINTS

    @property
    def holds_back_calls(self) -> bool:
        """Whether another call would not fit the tokens left (so none may start)."""
        left = self.constraint.max_new_tokens - self.generated
        return self._calls > 0 and left < self.constraint.min_call_tokens

    def tokens_needed(self) -> int:
        """A lower bound of the tokens the answer still needs to be of use.

        The fewest tokens that write what the grammar forces next, or, when a call the reader
        keeps completes inside that forced text, the fewest that write it up to that point.
        """
        spelling = self.constraint.spelling
        if spelling is None:
            return 0
        forced = self.matcher.find_jump_forward_string()
        return spelling.fewest_tokens(self._until_a_call_completes(forced).encode())

    def _until_a_call_completes(self, forced: str) -> str:
        """The shortest start of ``forced`` after which one more call is complete (``forced`` when none is)."""
        fmt = self.constraint.fmt
        if fmt is None:
            return forced
        written, tools = self._text.decode("utf-8", "replace"), self.constraint.tools
        for end, character in enumerate(forced, start=1):
            if character in "}>" and len(fmt.complete_calls(written + forced[:end], tools)) > self._calls:
                return forced[:end]
        return forced

    def accept(self, token: int) -> None:
        """Advance the grammar with the chosen token, and the span, call and budget tracking with its bytes."""
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"the grammar rejected token {token}, which its own mask allowed")
        self.generated += 1
        if token < len(self.constraint.token_bytes):
            self._track(token, self.constraint.token_bytes[token])
        left = self.constraint.max_new_tokens - self.generated
        if self.constraint.must_complete and self._calls == 0 and left > 0 and not self.matcher.is_terminated():
            self.cut = self.tokens_needed() > left

    def _track(self, token: int, piece: bytes) -> None:
        """The calibrated decision, the text written and the calls complete, after ``token`` (its bytes ``piece``)."""
        decision = self.constraint.decision
        if self.deciding and decision is not None:
            if bool(decision.call_tokens[self._text][token]):
                self.decided = "call"
            elif bool(decision.answer_tokens[self._text][token]):
                self.decided = "answer"
        self._text += piece
        fmt = self.constraint.fmt
        if fmt is not None and (b"}" in piece or b">" in piece):
            calls = fmt.complete_calls(self._text.decode("utf-8", "replace"), self.constraint.tools)
            self._calls = len(calls)
            keys = [call_key(name, arguments) for name, arguments in calls]
            self.repeated_call = len(set(keys)) < len(keys) or not self.constraint.earlier.isdisjoint(keys)


_BITS = torch.arange(32, dtype=torch.int32)


def _mask_(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set ``scores [N, V]`` to -inf where xgrammar's int32 bitmask ``[N, ceil(V'/32)]`` has a 0.

    Tokens beyond the bitmask (a model vocabulary padded past the tokenizer's) are masked too.
    On CPU xgrammar's own kernel does it; elsewhere the bits are unpacked with torch.
    """
    vocab = scores.shape[-1]
    covered = min(vocab, bitmask.shape[-1] * 32)
    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        _xgrammar().apply_token_bitmask_inplace(scores, bitmask, vocab_size=covered)
    else:
        bits = bitmask.to(scores.device)
        allowed = ((bits.unsqueeze(-1) >> _BITS.to(scores.device)) & 1).bool().flatten(1)[:, :covered]
        scores[:, :covered].masked_fill_(~allowed, float("-inf"))
    if covered < vocab:
        scores[:, covered:] = float("-inf")


def branch_log_odds(plain: torch.Tensor, call: torch.Tensor, answer: torch.Tensor) -> float | None:
    """log P(call branch) − log P(answer branch) over ``plain [V]``; ``None`` unless both branches have tokens."""
    if not bool(call.any()) or not bool(answer.any()):
        return None
    return torch.logsumexp(plain[call], 0).item() - torch.logsumexp(plain[answer], 0).item()


def constrain_scores(
    scores: torch.Tensor, signal: torch.Tensor, logits: torch.Tensor, states: Sequence[ConstraintState | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each constrained request's scores ``[B, V]`` to what its grammar and rules allow.

    In a span under ``constrained_alignment="off"`` the scores are the first row's log-probs
    (and the signal 0). When the method left no allowed token a finite score (PAD's top-k, AAD's
    plausible set, the linear nucleus may exclude all of them), the first row's log-probs over
    the allowed tokens are used, so a grammar always finds a valid token.
    """
    active = [index for index, state in enumerate(states) if state is not None]
    if not active:
        return scores, signal
    width = max(state.bitmask_width for state in states if state is not None)
    bitmask = torch.zeros((len(active), width), dtype=torch.int32)
    for slot, index in enumerate(active):
        states[index].matcher.fill_next_token_bitmask(bitmask, slot)  # type: ignore[union-attr]
    rows = torch.tensor(active, device=scores.device)
    masked = scores[rows]
    plain_rows = [slot for slot, index in enumerate(active) if not states[index].steers]  # type: ignore[union-attr]
    if plain_rows:
        plain = torch.tensor(plain_rows, device=scores.device)
        masked[plain] = torch.log_softmax(logits[rows[plain], 0], dim=-1)
        signal = signal.clone()
        signal[rows[plain]] = 0.0
    _mask_(masked, bitmask)
    _apply_rules(masked, logits, rows, [states[index] for index in active])  # type: ignore[misc]
    dead = masked.max(dim=-1).values == float("-inf")
    if bool(dead.any()):
        fallback = torch.log_softmax(logits[rows[dead], 0], dim=-1)
        _mask_(fallback, bitmask[dead.cpu()])
        masked[dead] = fallback
    if len(active) == scores.shape[0]:
        return masked, signal
    return scores.index_copy(0, rows, masked), signal


def _apply_rules(masked: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor, states: list[ConstraintState]) -> None:
    """The calibrated decision and the call budget, on the grammar-masked scores."""
    for slot, state in enumerate(states):
        decision = state.constraint.decision
        if state.deciding and decision is not None and not state.written and decision.opening_token is not None:
            keep = masked[slot, decision.opening_token].clone()
            masked[slot].fill_(float("-inf"))
            masked[slot, decision.opening_token] = keep
        elif state.deciding and decision is not None:
            written = state.written
            plain = torch.log_softmax(logits[rows[slot], decision.row].float(), dim=-1).cpu()
            allowed = torch.isfinite(masked[slot]).cpu()
            vocab = plain.shape[-1]
            call = decision.call_tokens[written][:vocab] & allowed
            answer = decision.answer_tokens[written][:vocab] & allowed
            odds = branch_log_odds(plain, call, answer)
            if odds is not None:
                state.call_log_odds = odds
                losing = answer if odds + decision.bias > 0 else call
                masked[slot, : losing.shape[0]].masked_fill_(losing.to(masked.device), float("-inf"))
        separators = state.constraint.separator_tokens
        if separators is not None and state.holds_back_calls:
            masked[slot, : separators.shape[0]].masked_fill_(
                separators[: masked.shape[-1]].to(masked.device), float("-inf")
            )


def advance(states: Sequence[ConstraintState | None], tokens: torch.Tensor) -> None:
    """Advance every constrained request's grammar with its chosen token."""
    if any(state is not None for state in states):
        for state, token in zip(states, tokens.tolist(), strict=True):
            if state is not None:
                state.accept(token)
