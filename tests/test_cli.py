"""The ``aligned-llm`` command on a tiny model."""

from __future__ import annotations

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
