"""Independent re-computations of the spec formulas for the tests.

Deliberately naive: every step re-runs each context from scratch in its own unbatched
forward (no KV cache, no padding), then applies the formula of docs/methods.md literally,
as whole-vocabulary tensor ops (no Python loop over tokens, which took minutes per test).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def full_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits ``[L, V]`` (fp32) of one unpadded sequence."""
    return model(input_ids=torch.tensor([ids])).logits[0].float()


def greedy_vanilla(model, prompt: list[int], max_new_tokens: int, eos: set[int]) -> list[int]:
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(torch.argmax(torch.log_softmax(full_logits(model, prompt + out)[-1], -1)))
        out.append(token)
        if token in eos:
            break
    return out


def greedy_opad(
    model, constrained: list[int], unconstrained: list[int], beta: float, window, max_new_tokens: int, eos: set[int]
) -> list[int]:
    """OPAD per docs/methods.md ("OPAD"), two separate forwards per step."""
    out: list[int] = []
    previous_c = previous_u = None
    for step in range(max_new_tokens):
        all_c = full_logits(model, constrained + out)
        all_u = full_logits(model, unconstrained + out)
        z_c, z_u = all_c[-1], all_u[-1]
        ls_c, ls_u = torch.log_softmax(z_c, -1), torch.log_softmax(z_u, -1)
        if step == 0:
            score = ls_c
            if window == "reference":
                previous_c, previous_u = all_c.mean(0), all_u.mean(0)
            else:
                previous_c, previous_u = z_c, z_u
        else:
            r_t = ls_c - ls_u
            r_prev = torch.log_softmax(previous_c, -1) - torch.log_softmax(previous_u, -1)
            score = ls_c + (1 / beta) * (r_t + r_prev) if window != 1 else ls_c + (1 / beta) * r_t
            previous_c, previous_u = z_c, z_u
        token = int(torch.argmax(score))
        out.append(token)
        if token in eos:
            break
    return out


def greedy_linear(
    model,
    constrained: list[int],
    unconstrained: list[int],
    rho: float,
    top_p: float,
    max_new_tokens: int,
    eos: set[int],
) -> list[int]:
    """Linear alignment: (1+ρ)z_c − ρz_u on raw logits, inside the top-p nucleus of softmax(z_c)."""
    out: list[int] = []
    for _ in range(max_new_tokens):
        z_c = full_logits(model, constrained + out)[-1]
        z_u = full_logits(model, unconstrained + out)[-1]
        probs = torch.softmax(z_c, -1)
        order = torch.argsort(probs, descending=True)
        mass = torch.cumsum(probs[order].double(), 0)  # running float64 sum, likeliest first
        kept = order[: int((mass < top_p).sum()) + 1]  # up to and including the token that reaches top_p
        score = (1 + rho) * z_c - rho * z_u
        token = int(kept[torch.argmax(score[kept])])  # ties go to the likelier token
        out.append(token)
        if token in eos:
            break
    return out


def greedy_pad(base, reward, reference, beta: float, k: int, max_new_tokens: int, eos: set[int]) -> list[int]:
    """PAD per docs/methods.md ("PAD"). ``base``/``reward``/``reference``: callables from the
    generated ids so far to that context's next-token logits, each its own forward."""
    out: list[int] = []
    for _ in range(max_new_tokens):
        z_base, z_rm, z_ref = base(out), reward(out), reference(out)
        top_logits, candidates = torch.topk(z_base, k)
        bonus = torch.log_softmax(z_rm[candidates], -1) - torch.log_softmax(z_ref[candidates], -1)
        token = int(candidates[torch.argmax(top_logits + beta * bonus)])
        out.append(token)
        if token in eos:
            break
    return out


def greedy_aad(dpo, sft, alpha: float, max_new_tokens: int, eos: set[int]) -> list[int]:
    """AAD per docs/methods.md ("AAD"); ties in the advantage go to the likelier DPO token."""
    import math

    out: list[int] = []
    for _ in range(max_new_tokens):
        lp_d, lp_s = torch.log_softmax(dpo(out), -1), torch.log_softmax(sft(out), -1)
        plausible = lp_d >= math.log(alpha) + lp_d.max()
        advantage = (lp_d - lp_s).masked_fill(~plausible, float("-inf"))
        best = torch.nonzero(advantage == advantage.max()).flatten()  # the plausible tokens of top advantage
        token = int(best[torch.argmax(lp_d[best])])
        out.append(token)
        if token in eos:
            break
    return out


class NaiveTextAssembler:
    """Stop-string handling done the obvious way: every stop searched in the whole text at every token."""

    def __init__(self, tokenizer, stop_strings=()) -> None:
        self._tokenizer = tokenizer
        self._stop_strings = tuple(stop_strings)
        self._ids: list[int] = []
        self.text = ""
        self.stopped_by = None

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        hits = [(full.find(stop), stop) for stop in self._stop_strings if stop in full]
        if hits:
            index, self.stopped_by = min(hits)
            return self._emit(full[:index])
        if full.endswith("\ufffd"):
            return ""
        pending = max(
            (size for stop in self._stop_strings for size in range(1, min(len(stop) - 1, len(full)) + 1)
             if full.endswith(stop[:size])),
            default=0,
        )  # fmt: skip
        return self._emit(full[: len(full) - pending])

    def finish(self) -> str:
        if self.stopped_by is not None:
            return ""
        return self._emit(self._tokenizer.decode(self._ids, skip_special_tokens=True))

    def _emit(self, certain: str) -> str:
        delta = certain[len(self.text) :]
        self.text += delta
        return delta
