"""What the alignment signal does inside a tool call: ``constrained_alignment="steer"`` vs ``"off"``.

On the bundled model, prompts whose tool call has one right argument value ("What's the weather
in Paris?" → ``get_weather(city="Paris")``) are decoded with ``tool_choice="required"`` under
principles that would rewrite text (pirate speech, French, capitals), with OPAD and the linear
baseline, once with the method steering inside the call and once with it off there. Reported:
the share of calls with exactly the right arguments (and ignoring case), next to plain decoding
without a principle. Under ``tool_choice="required"`` the whole answer is a constrained span, so
``"off"`` decodes it from the first row alone: it equals direct prompting (the principle in the
prompt, no method) token for token, for OPAD and linear alike (tests/test_constraints.py).

    python benchmarks/constrained_alignment.py --out docs/results/constrained-alignment
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aligned_llm import AlignedLLM

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city name"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_timer",
            "description": "Start a countdown timer",
            "parameters": {
                "type": "object",
                "properties": {"minutes": {"type": "integer", "description": "Length of the timer in minutes"}},
                "required": ["minutes"],
            },
        },
    },
]
CASES = [
    ("What's the weather like in Paris right now?", "get_weather", {"city": "Paris"}),
    ("Is it snowing in Oslo today?", "get_weather", {"city": "Oslo"}),
    ("How hot is it in Cairo?", "get_weather", {"city": "Cairo"}),
    ("Tell me the weather in Tokyo.", "get_weather", {"city": "Tokyo"}),
    ("Do I need an umbrella in London?", "get_weather", {"city": "London"}),
    ("What's the temperature in Madrid?", "get_weather", {"city": "Madrid"}),
    ("Weather report for Chicago, please.", "get_weather", {"city": "Chicago"}),
    ("Is it windy in Sydney?", "get_weather", {"city": "Sydney"}),
    ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}),
    ("Start a 5 minute timer, please.", "set_timer", {"minutes": 5}),
    ("Remind me in 25 minutes with a timer.", "set_timer", {"minutes": 25}),
    ("I need a timer for 3 minutes for my eggs.", "set_timer", {"minutes": 3}),
]
PRINCIPLES = {
    "pirate": "Always talk like a pirate.",
    "french": "Always answer in French.",
    "capitals": "Write everything in capital letters.",
}


STRENGTHS = [("opad", {"beta": 1.0}), ("opad", {"beta": 0.25}), ("linear", {"rho": 2.0})]
"""The methods at their default strength, and OPAD four times stronger (smaller β)."""


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def score(results) -> dict[str, float]:
    exact = lower = 0
    for (_, name, arguments), result in zip(CASES, results, strict=True):
        call = result.tool_calls[0] if result.tool_calls else None
        if call is not None and call.name == name:
            exact += call.arguments == arguments
            lower += {k: _lower(v) for k, v in call.arguments.items()} == {k: _lower(v) for k, v in arguments.items()}
    return {"exact": exact / len(CASES), "ignoring_case": lower / len(CASES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="a call takes about 30 tokens")
    args = parser.parse_args()
    llm = AlignedLLM.default(device="cpu")
    prompts = [prompt for prompt, _, _ in CASES]
    common = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    common["max_new_tokens"] = args.max_new_tokens
    rows: list[dict[str, object]] = []
    samples: dict[str, list[dict[str, object]]] = {}

    def run(label: str, key: str, method: str, mode: str, strength: dict[str, float]) -> None:
        started = time.perf_counter()
        principle = PRINCIPLES.get(key)
        results = llm.generate(
            prompts, method=method, principle=principle, constrained_alignment=mode, **strength, **common
        )
        row = {"principle": key, "method": method, **strength, "constrained_alignment": mode, **score(results)}
        rows.append(row)
        samples[label] = [
            {"name": r.tool_calls[0].name, "arguments": r.tool_calls[0].arguments} if r.tool_calls else None
            for r in results
        ]
        print(f"{label:36s} exact {row['exact']:.2f}  ignoring case {row['ignoring_case']:.2f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip

    run("none/vanilla", "none", "vanilla", "off", {})
    for key in PRINCIPLES:
        for method, strength in STRENGTHS:
            for mode in ("steer", "off"):
                name = ",".join(f"{k}={v:g}" for k, v in strength.items())
                run(f"{key}/{method}({name})/{mode}", key, method, mode, strength)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"model": llm.name, "cases": len(CASES), "rows": rows, "calls": samples}
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        lines = [
            f"# Arguments under a principle: `constrained_alignment` ({llm.name}, {len(CASES)} calls each)",
            "",
            "| principle | method | strength | constrained_alignment | exact arguments | ignoring case |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['principle']} | {r['method']} | {', '.join(f'{k}={r[k]:g}' for k in ('beta', 'rho') if k in r)} "
            f"| {r['constrained_alignment'] if r['method'] != 'vanilla' else '—'} "
            f"| {r['exact']:.0%} | {r['ignoring_case']:.0%} |"
            for r in rows
        ]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
