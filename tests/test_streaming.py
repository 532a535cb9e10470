"""Streaming deltas, stop strings, cancellation and traces."""

from __future__ import annotations

import random
import threading

import pytest

from aligned_llm.streaming import TextAssembler
from tests.reference import NaiveTextAssembler

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


@pytest.mark.parametrize(
    "settings",
    [{}, {"method": "opad", "principle": "Be brief."}, {"temperature": 0.9, "seed": 4}],
    ids=["vanilla", "opad", "sampled"],
)
def test_streamed_text_equals_generated_text(tiny_llm, settings):
    result = tiny_llm.generate(PROMPT, max_new_tokens=24, **settings)
    stream = tiny_llm.stream(PROMPT, max_new_tokens=24, **settings)
    deltas = list(stream)
    assert "".join(deltas) == result.text
    assert len(deltas) > 1
    assert stream.result == result


def test_text_is_the_tokenizer_decoding_of_the_tokens(bundled_llm):
    result = bundled_llm.generate("Say hello in French, Japanese and with an emoji.", max_new_tokens=30)
    assert result.text == bundled_llm.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    streamed = bundled_llm.stream("Say hello in French, Japanese and with an emoji.", max_new_tokens=30)
    assert "".join(streamed) == result.text


def test_stop_string_is_cut_and_ends_generation(tiny_llm):
    full = tiny_llm.generate(PROMPT, max_new_tokens=30)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    assert stop.strip(), "pick a visible stop string"
    cut = tiny_llm.generate(PROMPT, max_new_tokens=30, stop=[stop, "never-appears-xyz"])
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.output_tokens < full.output_tokens
    streamed = "".join(tiny_llm.stream(PROMPT, max_new_tokens=30, stop=stop))
    assert streamed == cut.text


def test_length_finish_reason_and_token_counts(tiny_llm):
    result = tiny_llm.generate(PROMPT, max_new_tokens=5)
    assert result.finish_reason == "length"
    assert result.output_tokens == len(result.token_ids) == 5
    assert result.input_tokens == len(tiny_llm.encode_rows([{"role": "user", "content": PROMPT}], _settings())[0])


def _settings(**options):
    from aligned_llm import DecodeSettings

    return DecodeSettings(**options)


class _FakeTokenizer:
    """Decodes ids as UTF-8 bytes, so one character can span several tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_assembler_holds_back_incomplete_characters_and_stop_prefixes():
    data = "héllo 🌍 END tail".encode()
    assembler = TextAssembler(_FakeTokenizer(), stop_strings=["END"])
    deltas = [assembler.add(byte) for byte in data]
    assert "\ufffd" not in "".join(deltas)
    assert assembler.stopped_by == "END"
    assert "".join(deltas) + assembler.finish() == "héllo 🌍 "
    assert "E" not in "".join(deltas), "a possible stop-string start must not be streamed"


def test_assembler_releases_a_false_stop_prefix():
    assembler = TextAssembler(_FakeTokenizer(), stop_strings=["ENDX"])
    text = "".join(assembler.add(byte) for byte in b"an END")
    assert text == "an "
    assert assembler.finish() == "END"
    assert assembler.stopped_by is None


def test_stream_cancel_ends_the_generation_early(tiny_llm):
    stream = tiny_llm.stream(PROMPT, max_new_tokens=200)
    next(stream)
    stream.cancel()
    rest = list(stream)
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.output_tokens < 200
    assert len(rest) <= 2


def test_llm_cancel_from_another_thread(tiny_llm):
    results = []
    started = threading.Event()

    def worker():
        stream = tiny_llm.stream(PROMPT, max_new_tokens=200)
        for _ in stream:
            started.set()
        results.append(stream.result)

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(60)
    tiny_llm.cancel()
    thread.join(60)
    assert results[0].finish_reason == "cancelled"
    assert results[0].output_tokens < 200


def test_concurrent_generations_do_not_mix(tiny_llm):
    prompts = [PROMPT, "Hi", "Name a fruit."]
    expected = [tiny_llm.generate(p, max_new_tokens=8).token_ids for p in prompts]
    got = [None] * len(prompts)

    def run(i):
        got[i] = tiny_llm.generate(prompts[i], max_new_tokens=8).token_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert got == expected


def test_trace_records_rows_scores_and_signal(tiny_llm):
    result = tiny_llm.generate(PROMPT, method="opad", principle="Be brief.", beta=0.5, max_new_tokens=6, trace=True)
    assert len(result.trace) == result.output_tokens
    assert [t.token_id for t in result.trace] == list(result.token_ids)
    first, later = result.trace[0], result.trace[1:]
    assert set(first.logprobs) == {"constrained", "unconstrained"}
    assert first.signal == 0.0
    assert first.score == pytest.approx(first.logprobs["constrained"], abs=1e-5)
    for token in later:
        assert token.score == pytest.approx(token.logprobs["constrained"] + token.signal, abs=1e-4)
        assert token.kl >= -1e-6
    assert any(abs(t.signal) > 1e-3 for t in later)
    plain = tiny_llm.generate(PROMPT, max_new_tokens=3, trace=True)
    assert plain.trace[0].kl is None and set(plain.trace[0].logprobs) == {"policy"}
    assert tiny_llm.generate(PROMPT, max_new_tokens=3).trace is None


def test_generating_while_iterating_a_stream_on_the_same_thread(tiny_llm):
    expected_inner = tiny_llm.generate("Hi", max_new_tokens=4)
    expected_outer = tiny_llm.generate(PROMPT, max_new_tokens=8)
    stream = tiny_llm.stream(PROMPT, max_new_tokens=8)
    first = next(stream)
    inner = tiny_llm.generate("Hi", max_new_tokens=4)
    assert inner.token_ids == expected_inner.token_ids
    assert first + "".join(stream) == expected_outer.text


def test_a_stream_can_be_advanced_from_several_threads(tiny_llm):
    """Async frameworks advance a stream from executor threads; nothing may stay locked."""
    from concurrent.futures import ThreadPoolExecutor

    expected = tiny_llm.generate(PROMPT, max_new_tokens=8).text
    stream = tiny_llm.stream(PROMPT, max_new_tokens=8)
    deltas = []
    for step in (lambda: [next(stream)], lambda: [next(stream)], lambda: list(stream)):
        with ThreadPoolExecutor(max_workers=1) as pool:
            deltas += pool.submit(step).result()
    assert "".join(deltas) == expected
    assert tiny_llm.generate("Hi", max_new_tokens=2).output_tokens == 2, "the model must not stay locked"


def test_concurrent_streams_interleave_and_match_serial_runs(tiny_llm):
    prompts = [PROMPT, "Name a fruit."]
    expected = [tiny_llm.generate(p, max_new_tokens=6).text for p in prompts]
    first, second = (tiny_llm.stream(p, max_new_tokens=6) for p in prompts)
    texts = ["", ""]
    for _ in range(10):
        for slot, stream in enumerate((first, second)):
            texts[slot] += next(stream, "")
    assert texts == expected


ALPHABET = ["a", "b", "ab", " ", "é", "日本", "🙂", "\n", "END", "b a"]


def _random_case(rng: random.Random) -> tuple[str, list[str]]:
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 25)))
    stops = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.7 and text:
            start = rng.randrange(len(text))
            stops.append(text[start : start + rng.randint(1, 6)])
        else:
            stops.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 3))))
    return text, stops


def _run(assembler, ids: list[int]) -> tuple[list[str], str | None]:
    """Feed tokens as the engine does: until a stop string is found, then finish."""
    deltas = []
    for token in ids:
        deltas.append(assembler.add(token))
        if assembler.stopped_by is not None:
            break
    deltas.append(assembler.finish())
    return deltas, assembler.stopped_by


@pytest.mark.parametrize("tokenization", ["bytes", "bpe"])
def test_assembler_matches_the_naive_stop_search(tokenization, tokenizer):
    """Same deltas and the same stop string as searching every stop in the whole text each token."""
    rng = random.Random(7)
    decoder = _FakeTokenizer() if tokenization == "bytes" else tokenizer
    stopped = 0
    for _ in range(300):
        text, stops = _random_case(rng)
        ids = list(text.encode()) if tokenization == "bytes" else tokenizer.encode(text, add_special_tokens=False)
        expected = _run(NaiveTextAssembler(decoder, stops), ids)
        assert _run(TextAssembler(decoder, stops), ids) == expected, (text, stops)
        stopped += expected[1] is not None
    assert 100 < stopped < 300, "the cases cover both stopping and running to the end"


def test_assembler_with_ten_thousand_stop_strings_matches_the_naive_search():
    rng = random.Random(3)
    stops = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(10_000)]
    text = "".join(rng.choice("abcdefgh ") for _ in range(400))
    ids = list(text.encode())
    expected = _run(NaiveTextAssembler(_FakeTokenizer(), stops), ids)
    assert _run(TextAssembler(_FakeTokenizer(), stops), ids) == expected
    assert expected[1] is not None
