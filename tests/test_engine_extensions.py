"""A third party extends the engine without editing it: its score processors and stopping criteria run each step."""

from __future__ import annotations

import torch

from aligned_llm import AlignedLLM, DecodeSettings, ScoreProcessor, StoppingCriterion

PROMPT = "Tell me about the sea."


class Forbid(ScoreProcessor):
    """Removes some tokens from every step's choice."""

    def __init__(self, token_ids: set[int]) -> None:
        self.token_ids = torch.tensor(sorted(token_ids))
        self.seen_steps: list[int] = []

    def __call__(self, scored, context):
        self.seen_steps.append(context.step)
        scores = scored.scores.clone()
        scores[:, self.token_ids] = float("-inf")
        return scored._replace(scores=scores)


class StopAfter(StoppingCriterion):
    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, progress):
        return "stop" if len(progress.token_ids) >= self.count else None


def test_a_processor_runs_at_every_step_and_its_tokens_never_appear(tiny_llm):
    plain = tiny_llm.generate(PROMPT, max_new_tokens=8, trace=True)
    banned = set(plain.token_ids)
    forbid = Forbid(banned)
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, score_processors=[forbid])
    result = llm.generate(PROMPT, max_new_tokens=8, trace=True)
    assert not banned & set(result.token_ids)
    assert forbid.seen_steps == list(range(result.output_tokens))
    assert all(token.score > float("-inf") for token in result.trace), "the chosen tokens were not forbidden"


def test_the_processor_picks_the_next_best_token_of_the_plain_scores(tiny_llm):
    plain = tiny_llm.generate(PROMPT, max_new_tokens=1, trace=True)
    ids = tiny_llm.encode_rows([{"role": "user", "content": PROMPT}], DecodeSettings())[0]
    with torch.inference_mode():
        logits = tiny_llm.model(torch.tensor([ids])).logits[0, -1].float()
    expected = logits.topk(2).indices.tolist()
    assert plain.token_ids[0] == expected[0]
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, score_processors=[Forbid({expected[0]})])
    assert llm.generate(PROMPT, max_new_tokens=1).token_ids[0] == expected[1]


def test_a_stopping_criterion_ends_requests_before_the_length_limit(tiny_llm):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, stopping_criteria=[StopAfter(3)])
    results = llm.generate([PROMPT, "Hi"], max_new_tokens=10)
    assert [(r.output_tokens, r.finish_reason) for r in results] == [(3, "stop"), (3, "stop")]
    capped = llm.generate(PROMPT, max_new_tokens=2)
    assert (capped.output_tokens, capped.finish_reason) == (2, "length")
