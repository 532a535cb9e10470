"""AAD as a data generator: JSONL pairs, chosen = AAD, rejected = a nucleus sample of the DPO model."""

from __future__ import annotations

import json

import pytest

from aligned_llm import AlignedLLM, InvalidSettingError
from aligned_llm.cli import main
from aligned_llm.pairs import PreferencePair, aad_pairs, write_jsonl

PROMPTS = ["Tell me about the moon.", "Name three rivers.", "Write a haiku about rain."]


@pytest.fixture(scope="module")
def pair_llm(tiny_dir, tiny_adapter_dir):
    return AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir)


def test_pairs_are_aad_versus_a_seeded_dpo_sample(pair_llm, tmp_path):
    out = tmp_path / "pairs.jsonl"
    count = write_jsonl(aad_pairs(pair_llm, PROMPTS, max_new_tokens=8, batch_size=2, progress=False), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == len(rows) > 0
    assert not (tmp_path / "pairs.jsonl.partial").exists()
    chosen = pair_llm.generate(PROMPTS, method="aad", max_new_tokens=8)
    rejected = pair_llm.generate(PROMPTS, temperature=1.0, top_p=0.9, seed=0, max_new_tokens=8)
    expected = [
        {"prompt": p, "chosen": c.text.strip(), "rejected": r.text.strip()}
        for p, c, r in zip(PROMPTS, chosen, rejected, strict=True)
        if c.text.strip() != r.text.strip()
    ]
    assert rows == expected


def test_pairs_without_a_pair_fail_before_writing(tiny_llm, tmp_path):
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(InvalidSettingError, match="DPO/SFT pair"):
        write_jsonl(aad_pairs(tiny_llm, PROMPTS), out)
    assert not out.exists() and not (tmp_path / "pairs.jsonl.partial").exists()
    with pytest.raises(InvalidSettingError) as raised:
        aad_pairs(tiny_llm, PROMPTS, batch_size=0)
    assert raised.value.parameter == "batch_size"


def test_cli_pairs(tiny_dir, tiny_adapter_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    out = tmp_path / "out.jsonl"
    code = main(["pairs", str(prompts), "--out", str(out), "--model", str(tiny_dir), "--adapter",
                 str(tiny_adapter_dir), "--max-new-tokens", "6"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["prompt"] for row in rows} <= set(PROMPTS) and rows
    assert f"{len(rows)} pairs from 3 prompts" in capsys.readouterr().err


def _rows(count: int) -> list[PreferencePair]:
    return [PreferencePair(f"prompt {i}", f"good {i}", f"bad {i}") for i in range(count)]


def test_write_jsonl_never_writes_through_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "pairs.jsonl"
    (tmp_path / "pairs.jsonl.partial").symlink_to(victim)
    assert write_jsonl(_rows(3), out) == 3
    assert victim.read_text() == "precious"
    assert [json.loads(line)["chosen"] for line in out.read_text().splitlines()] == ["good 0", "good 1", "good 2"]
    assert not out.is_symlink()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pairs.jsonl", "pairs.jsonl.partial", "victim.txt"]


def test_write_jsonl_replaces_a_symlink_at_the_output_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "pairs.jsonl"
    out.symlink_to(victim)
    write_jsonl(_rows(1), out)
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and json.loads(out.read_text())["prompt"] == "prompt 0"


def test_write_jsonl_keeps_the_rows_of_a_failed_run_beside_the_output(tmp_path, caplog):
    def failing():
        yield from _rows(2)
        raise RuntimeError("decoding failed")

    out = tmp_path / "pairs.jsonl"
    out.write_text("the previous run\n")
    with pytest.raises(RuntimeError, match="decoding failed"):
        write_jsonl(failing(), out)
    assert out.read_text() == "the previous run\n", "the output is replaced only when complete"
    (partial,) = tmp_path.glob(".pairs.jsonl.*.partial")
    assert len(partial.read_text().splitlines()) == 2
    assert str(partial) in caplog.text
