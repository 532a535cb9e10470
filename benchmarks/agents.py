"""Agents with default settings on the bundled model: LangChain ``create_agent`` over 5 tools, 30 questions.

24 questions that one of the tools answers (weather, multiplication, e-mail look-up, population,
unit conversion) and 6 that none does. Each question runs through the framework's own agent,
``create_agent(ChatAlignedLLM(...), tools=TOOLS)`` with nothing else set (``recursion_limit`` 10;
``--max-tokens`` bounds answers to keep a CPU run short),
under vanilla decoding and OPAD with "Answer like a pirate.", with the library's current
default (the ``generic`` format's calibrated decision) and with its behaviour before
(``tool_format="hermes"``: the Hermes prompt with a lazy grammar, results in the assistant turn).

Per run: the right tool with valid arguments first, the final answer holding the tool's result,
prose (no call) where no tool fits, the agent ending without an error (no recursion limit hit),
no call markup in the final answer, and pirate words in final answers (under OPAD).

    python benchmarks/agents.py --limit 4                          # a smoke run
    python benchmarks/agents.py --max-tokens 96 --out docs/results/agents          # the recorded run

Writes OUT.json (every conversation) and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_aligned_llm import ChatAlignedLLM
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from scoring import proportion

from aligned_llm import AlignedLLM

SYSTEM = "You are a helpful assistant. Use a tool when one fits, then answer the user."
PIRATE = "Answer like a pirate."
EMAILS = {"alice": "alice.w@acme.example", "bob": "bob.k@acme.example", "carol": "carol.m@acme.example",
          "dave": "dave.r@acme.example", "eve": "eve.s@acme.example"}  # fmt: skip
POPULATIONS = {"france": "68 million", "japan": "125 million", "brazil": "203 million", "canada": "40 million",
               "kenya": "54 million"}  # fmt: skip
MARKUP = re.compile(r"</?tool_(call|response)|\[TOOL_CALLS\]|<\|python_tag\|>|\{\"(tool_calls|response)\"")
PIRATE_WORDS = re.compile(r"\b(arr+|ahoy|matey|aye|ye|pirate|captain|sea|ship|sail|treasure|lad|lass)\b", re.I)


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"{city}: 17 degrees Celsius, light rain."


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    return a * b


@tool
def get_employee_email(name: str) -> str:
    """Look up the work email address of an employee by first name."""
    return EMAILS.get(name.strip().split()[0].lower().rstrip("'s") if name.strip() else "", "no such employee")


@tool
def get_population(country: str) -> str:
    """Get the population of a country."""
    return POPULATIONS.get(country.strip().lower(), "unknown")


@tool
def km_to_miles(km: float) -> str:
    """Convert a distance in kilometres to miles."""
    return f"{km * 0.621371:.1f} miles"


TOOLS = [get_weather, multiply, get_employee_email, get_population, km_to_miles]
Check = Callable[[dict[str, Any]], bool]


def _text(args: dict[str, Any], key: str) -> str:
    return str(args.get(key, "")).strip().lower()


def _is(key: str, value: str) -> Check:
    return lambda args: _text(args, key) == value


def _starts(key: str, prefix: str) -> Check:
    return lambda args: _text(args, key).startswith(prefix)


def _product(x: int, y: int) -> Check:
    return lambda args: sorted((int(args.get("a", 0)), int(args.get("b", 0)))) == sorted((x, y))


QUESTIONS: list[tuple[str, str | None, Check | None, str | None]] = [
    ("Is it raining in Tokyo?", "get_weather", _is("city", "tokyo"), "rain"),
    ("What's the weather like in Oslo today?", "get_weather", _is("city", "oslo"), "17"),
    ("Do I need a coat in Berlin right now?", "get_weather", _is("city", "berlin"), "17"),
    ("How warm is it in Madrid?", "get_weather", _is("city", "madrid"), "17"),
    ("What is the weather in Cairo?", "get_weather", _is("city", "cairo"), "rain"),
    ("What is 17 times 23?", "multiply", _product(17, 23), "391"),
    ("Multiply 12 by 34.", "multiply", _product(12, 34), "408"),
    ("How much is 45 times 6?", "multiply", _product(45, 6), "270"),
    ("What is 8 multiplied by 125?", "multiply", _product(8, 125), "1000"),
    ("Compute 19 times 21.", "multiply", _product(19, 21), "399"),
    ("What is Alice's email address?", "get_employee_email", _starts("name", "alice"), EMAILS["alice"]),
    ("How can I email Bob?", "get_employee_email", _starts("name", "bob"), EMAILS["bob"]),
    ("Find Carol's work email.", "get_employee_email", _starts("name", "carol"), EMAILS["carol"]),
    ("What's the email address of Dave?", "get_employee_email", _starts("name", "dave"), EMAILS["dave"]),
    ("Give me Eve's email.", "get_employee_email", _starts("name", "eve"), EMAILS["eve"]),
    ("What is the population of France?", "get_population", _is("country", "france"), "68 million"),
    ("How many people live in Japan?", "get_population", _is("country", "japan"), "125 million"),
    ("What's the population of Brazil?", "get_population", _is("country", "brazil"), "203 million"),
    ("How many people live in Canada?", "get_population", _is("country", "canada"), "40 million"),
    ("Tell me the population of Kenya.", "get_population", _is("country", "kenya"), "54 million"),
    ("How many miles is 10 kilometers?", "km_to_miles", lambda a: float(a.get("km", 0)) == 10, "6.2"),
    ("Convert 42 km to miles.", "km_to_miles", lambda a: float(a.get("km", 0)) == 42, "26.1"),
    ("What is 5 kilometres in miles?", "km_to_miles", lambda a: float(a.get("km", 0)) == 5, "3.1"),
    ("How far is 100 km in miles?", "km_to_miles", lambda a: float(a.get("km", 0)) == 100, "62.1"),
    ("Write a two-line poem about autumn leaves.", None, None, None),
    ("Say hello to me in French.", None, None, None),
    ("Tell me a joke.", None, None, None),
    ("Explain photosynthesis in one sentence.", None, None, None),
    ("Suggest a name for a cat.", None, None, None),
    ("What is the capital of Italy?", None, None, None),
]  # fmt: skip
RUNS: dict[str, dict[str, Any]] = {
    "before-vanilla": {"tool_format": "hermes"},
    "before-opad": {"tool_format": "hermes", "method": "opad", "principle": PIRATE},
    "now-vanilla": {},
    "now-opad": {"method": "opad", "principle": PIRATE},
}


def run(
    llm: AlignedLLM, settings: dict[str, Any], questions: list, concurrency: int, max_tokens: int | None
) -> list[dict[str, Any]]:
    """Every question through its own ``create_agent`` invocation; concurrent ones share the running batch."""
    bounded = {} if max_tokens is None else {"max_tokens": max_tokens}
    agent = create_agent(ChatAlignedLLM(llm=llm, **bounded, **settings), tools=TOOLS, system_prompt=SYSTEM)
    inputs = [{"messages": [HumanMessage(question)]} for question, *_ in questions]
    config = {"recursion_limit": 10, "max_concurrency": concurrency}
    outputs = agent.batch(inputs, config=config, return_exceptions=True)
    records = []
    for (question, wanted, check, result), output in zip(questions, outputs, strict=True):
        if isinstance(output, BaseException):
            records.append({"question": question, "error": type(output).__name__, "calls": [], "final": ""})
            continue
        messages = output["messages"]
        calls = [call for message in messages if isinstance(message, AIMessage) for call in message.tool_calls]
        final = messages[-1].content if isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls else ""
        record = {"question": question, "error": None, "final": final,
                  "calls": [{"name": call["name"], "args": call["args"]} for call in calls]}  # fmt: skip
        if wanted is None:
            record["prose"] = not calls and bool(final.strip())
        else:
            try:
                right = bool(calls) and calls[0]["name"] == wanted and bool(check(calls[0]["args"]))
            except (TypeError, ValueError):
                right = False
            record["right_call"] = right
            record["uses_result"] = right and result.lower() in final.lower()
        record["markup"] = bool(MARKUP.search(final))
        record["pirate"] = bool(PIRATE_WORDS.search(final))
        records.append(record)
    return records


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    relevant = [r for r in records if "right_call" in r or (r["error"] and r["question"] in RELEVANT_QUESTIONS)]
    irrelevant = [r for r in records if r not in relevant]
    return {
        "right_call": proportion([bool(r.get("right_call")) for r in relevant]),
        "uses_result": proportion([bool(r.get("uses_result")) for r in relevant]),
        "prose_when_no_tool_fits": proportion([bool(r.get("prose")) for r in irrelevant]),
        "ended_without_error": proportion([r["error"] is None for r in records]),
        "no_markup": proportion([not r.get("markup") for r in records if r["error"] is None]),
        "pirate_words": proportion([bool(r.get("pirate")) for r in records if r["error"] is None]),
    }


RELEVANT_QUESTIONS = {question for question, wanted, *_ in QUESTIONS if wanted is not None}
COLUMNS = {
    "right_call": "right tool, valid args",
    "uses_result": "answer uses the result",
    "prose_when_no_tool_fits": "prose when no tool fits",
    "ended_without_error": "no loop / error",
    "no_markup": "no markup in the answer",
    "pirate_words": "pirate words in the answer",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N tool questions and N/4 no-tool ones")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=None, help="bound each answer (default: the library's 512)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    questions = QUESTIONS
    if args.limit is not None:
        tools_part = [q for q in QUESTIONS if q[1] is not None][: args.limit]
        questions = tools_part + [q for q in QUESTIONS if q[1] is None][: max(1, args.limit // 4)]
    llm = AlignedLLM.default()
    results: dict[str, Any] = {}
    lines = ["| run | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name in args.runs.split(","):
        started = time.perf_counter()
        records = run(llm, RUNS[name], questions, args.concurrency, args.max_tokens)
        rates = summary(records)
        results[name] = {"settings": RUNS[name], "seconds": time.perf_counter() - started, "rates": rates,
                         "records": records}  # fmt: skip
        cells = [f"{100 * rates[key]['rate']:.0f}% [{100 * rates[key]['low']:.0f}, {100 * rates[key]['high']:.0f}]"
                 for key in COLUMNS]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], f"({results[name]['seconds']:.0f} s)", flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        fitting = sum(q[1] is not None for q in questions)
        bound = "" if args.max_tokens is None else f", max_tokens={args.max_tokens}"
        header = (f"LangChain create_agent, bundled SmolLM2-135M-Instruct, greedy, {len(questions)} questions "
                  f"({fitting} with a fitting tool), 5 tools, default settings{bound}\n\n")  # fmt: skip
        args.out.with_suffix(".md").write_text(header + table + "\n")


if __name__ == "__main__":
    main()
