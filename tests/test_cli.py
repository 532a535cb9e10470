"""The ``aligned-llm`` command on a tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aligned_llm import AlignedLLM
from aligned_llm.cli import main


def test_generate_streams_the_same_text_as_the_library(tiny_dir, capsys):
    code = main(["generate", "Tell me a joke.", "--model", str(tiny_dir), "--method", "opad",
                 "--principle", "Be brief.", "--beta", "0.5", "--max-new-tokens", "12"])  # fmt: skip
    out = capsys.readouterr()
    expected = AlignedLLM.from_pretrained(tiny_dir).generate(
        "Tell me a joke.", method="opad", principle="Be brief.", beta=0.5, max_new_tokens=12
    )
    assert code == 0
    assert out.out == expected.text + "\n"
    assert "12 tokens" in out.err and "finish_reason=length" in out.err


def test_compare_prints_each_column(tiny_dir, capsys):
    code = main(["compare", "Tell me a joke.", "--model", str(tiny_dir), "--principle", "Be brief.",
                 "--methods", "vanilla,direct,opad,linear", "--max-new-tokens", "6"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for column in ("vanilla", "direct", "opad", "linear", "Principle: Be brief."):
        assert column in out


def test_bad_settings_exit_with_a_clear_message(tiny_dir, capsys):
    code = main(["generate", "Hi", "--model", str(tiny_dir), "--method", "opad", "--principle", "p", "--beta", "-1"])
    assert code == 2
    assert "beta" in capsys.readouterr().err
    code = main(["compare", "Hi", "--model", str(tiny_dir), "--max-new-tokens", "4"])
    assert code == 2
    assert "principle" in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("Tell me about the moon.\nName a river.\n")
    return path


PAIRS_FAULTS = {
    "missing prompts file": (lambda tmp, prompts: ["pairs", str(tmp / "missing.txt"), "--out", str(tmp / "o.jsonl")],
                             "prompts"),
    "prompts file is a folder": (lambda tmp, prompts: ["pairs", str(tmp), "--out", str(tmp / "o.jsonl")], "prompts"),
    "--out in a missing folder": (lambda tmp, prompts: ["pairs", str(prompts), "--out", str(tmp / "no" / "o.jsonl")],
                                  "--out"),
    "--out names a folder": (lambda tmp, prompts: ["pairs", str(prompts), "--out", str(tmp)], "--out"),
}  # fmt: skip


@pytest.mark.parametrize("fault", sorted(PAIRS_FAULTS))
def test_pairs_input_and_output_are_checked_before_the_model_loads(fault, tmp_path, prompts_file, capsys):
    build, parameter = PAIRS_FAULTS[fault]
    code = main([*build(tmp_path, prompts_file), "--model", str(tmp_path / "no-such-model")])
    assert code == 2
    assert f"{parameter}:" in _one_line_error(capsys), "named before the (missing) model is looked at"


BROKEN_PROMPTS = {
    "not JSON": ('{"prompt": "a"}\n{"prompt": \n', "line 2 is not valid JSON"),
    "no prompt field": ('{"prompt": "a"}\n{"question": "b"}\n', "line 2 needs a non-empty 'prompt'"),
    "not UTF-8": (b"\xff\xfe caf\xe9\n", "cannot read"),
    "empty": ("\n  \n", "has no prompts"),
    "a lone surrogate": ('{"prompt": "\\ud800 hi"}\n', "lone surrogate"),
}


@pytest.mark.parametrize("fault", sorted(BROKEN_PROMPTS))
def test_a_broken_prompts_file_is_one_line(fault, tmp_path, tiny_dir, tiny_adapter_dir, capsys, monkeypatch):
    content, message = BROKEN_PROMPTS[fault]
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setattr(AlignedLLM, "generate", _no_decoding)
    code = main(["pairs", str(path), "--out", str(tmp_path / "out.jsonl"), "--model", str(tiny_dir), "--adapter",
                 str(tiny_adapter_dir)])  # fmt: skip
    assert code == 2
    line = _one_line_error(capsys)
    assert message in line and "prompt" in line
    assert not (tmp_path / "out.jsonl").exists()


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoding started")


def test_garbage_model_weights_are_one_line(tiny_dir, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_dir, tmp_path / "model"))
    (model / "model.safetensors").write_bytes(b"\x00" * 100)
    code = main(["generate", "Hi", "--model", str(model)])
    assert code == 2
    assert "model.safetensors" in _one_line_error(capsys)


def test_an_unexpected_error_is_one_line_with_a_way_to_see_more(tiny_dir, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something deep\ninside torch [broke]")

    monkeypatch.setattr(AlignedLLM, "stream", broken)
    code = main(["generate", "Hi", "--model", str(tiny_dir)])
    assert code == 1
    line = _one_line_error(capsys)
    assert "RuntimeError: something deep inside torch [broke]" in line and "ALIGNED_LLM_DEBUG=1" in line
    monkeypatch.setenv("ALIGNED_LLM_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something deep"):
        main(["generate", "Hi", "--model", str(tiny_dir)])


def test_sweep_writes_one_record_per_point_and_prompt_and_a_plot(tiny_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    code = main(["sweep", str(prompts_file), "--model", str(tiny_dir), "--method", "opad", "--principle", "Be brief.",
                 "--beta", "0.5,2", "--max-new-tokens", "6", "--check", "max-words:5", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["label"], row["prompt_index"]) for row in rows] == [
        ("opad β=0.5", 0), ("opad β=0.5", 1), ("opad β=2", 0), ("opad β=2", 1),
        ("direct prompting", 0), ("direct prompting", 1),
    ]  # fmt: skip
    expected = AlignedLLM.from_pretrained(tiny_dir).generate(
        ["Tell me about the moon.", "Name a river."], method="opad", principle="Be brief.", beta=2.0, max_new_tokens=6
    )
    assert [row["text"] for row in rows[2:4]] == [result.text for result in expected]
    assert all(row["adherence"] in (0.0, 1.0) and row["perplexity"] > 1 for row in rows)
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr()
    assert "opad β=0.5" in printed.out and "6 records written" in printed.err


@pytest.mark.parametrize(
    ("flags", "parameter"),
    [(["--beta", "-1"], "beta"), (["--beta", "0.5,,1"], "beta"), (["--beta", "x"], "beta"), ([], "grid"),
     (["--rho", "1,2"], "rho"), (["--beta", "1", "--check", "shouting"], "--check"),
     (["--beta", "1", "--baselines", "oracle"], "--baselines")],
    ids=["negative", "empty-value", "not-a-number", "no-grid", "other-method", "bad-check", "bad-baseline"],
)  # fmt: skip
def test_a_bad_sweep_is_refused_before_the_model_loads(flags, parameter, prompts_file, tmp_path, capsys):
    argv = ["sweep", str(prompts_file), "--model", str(tmp_path / "no-such-model"), "--method", "opad",
            "--principle", "p", "--out", str(tmp_path / "o.jsonl"), *flags]  # fmt: skip
    code = main(argv)
    line = _one_line_error(capsys) if code == 2 else ""
    assert code == 2 and parameter in line and "no-such-model" not in line, line
    assert not (tmp_path / "o.jsonl").exists()


def test_sweep_without_a_checker_scores_with_the_principle_gain_proxy(tiny_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "proxy.jsonl"
    code = main(["sweep", str(prompts_file), "--model", str(tiny_dir), "--principle", "Be brief.", "--beta", "1",
                 "--baselines", "", "--max-new-tokens", "4", "--out", str(out),
                 "--plot", str(tmp_path / "p.png")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["label"] for row in rows] == ["opad β=1", "opad β=1"]
    assert all(isinstance(row["adherence"], float) and row["adherence"] not in (0.0, 1.0) for row in rows)
    assert (tmp_path / "p.png").exists() and "principle gain (model)" in capsys.readouterr().out


def test_reward_model_loads_a_separate_persrm_for_pad(tiny_dir, capsys, monkeypatch):
    loads = []
    real_load = AlignedLLM.from_pretrained.__func__
    monkeypatch.setattr(AlignedLLM, "from_pretrained", classmethod(
        lambda cls, *args, **options: loads.append(options) or real_load(cls, *args, **options)
    ))  # fmt: skip
    code = main(["generate", "Tell me a joke.", "--model", str(tiny_dir), "--reward-model", str(tiny_dir),
                 "--method", "pad", "--profile", "Likes cats.", "--max-new-tokens", "6"])  # fmt: skip
    assert code == 0
    assert loads[0]["reward_model"] == str(tiny_dir)
    expected = AlignedLLM.from_pretrained(tiny_dir, reward_model=str(tiny_dir)).generate(
        "Tell me a joke.", method="pad", profile="Likes cats.", max_new_tokens=6
    )
    assert capsys.readouterr().out == expected.text + "\n"


@pytest.mark.parametrize(("command", "has_it"), [("generate", True), ("compare", True), ("serve", True),
                                                 ("sweep", True), ("pairs", False)])  # fmt: skip
def test_load_flags_come_from_model_spec(command, has_it, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = capsys.readouterr().out
    assert all(f"--{name.replace('_', '-')}" in help_text for name in ("model", "adapter", "reference", "device"))
    assert ("--reward-model" in help_text) == has_it, "pairs decodes AAD: no reward model"
