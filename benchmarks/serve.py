"""Serving throughput: the OpenAI-compatible server under 1, 4 and 16 concurrent clients vs the same load in process.

The same 16 requests (OPAD, four principles in turn, ``--max-tokens`` tokens each) are sent by
``c`` concurrent clients pulling from one queue, for c = 1 (one request at a time), 4 and 16:

- ``http``: streaming ``openai.AsyncOpenAI`` clients against ``aligned-llm serve`` running in
  a subprocess on 127.0.0.1 (what a deployment pays: HTTP, JSON, SSE);
- ``in-process``: ``llm.astream`` tasks in this process (the library without the server).

For each: aggregate completion tokens/s over the wall time, time to first token and latency
p50/p95 per request. Then Ray Data (``decode_dataset``) decodes the 16 prompts with 1 and 2
replicas (one principle; the wall time includes starting the actors and loading the models).

    python benchmarks/serve.py --out docs/results/serve            # bundled model, CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from throughput import PROMPTS

from aligned_llm import AlignedLLM
from aligned_llm.spec import ModelSpec

PRINCIPLES = [
    "Be extremely brief.",
    "Answer like a pirate.",
    "Use formal language.",
    "Be cheerful and enthusiastic.",
]
REQUESTS = 16
CONCURRENCY = (1, 4, 16)


def requests_to_send() -> list[tuple[str, str]]:
    return [(PROMPTS[i % len(PROMPTS)], PRINCIPLES[i % len(PRINCIPLES)]) for i in range(REQUESTS)]


def summarise(name: str, clients: int, wall: float, records: list[tuple[float, float, int]]) -> dict:
    ttft = sorted(record[0] for record in records)
    latency = sorted(record[1] for record in records)
    tokens = sum(record[2] for record in records)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    return {
        "mode": name, "clients": clients, "requests": len(records), "tokens": tokens, "wall_s": wall,
        "tokens_per_s": tokens / wall, "ttft_p50_s": statistics.median(ttft), "ttft_p95_s": pct(ttft, 0.95),
        "latency_p50_s": statistics.median(latency), "latency_p95_s": pct(latency, 0.95),
    }  # fmt: skip


async def run_load(clients: int, one_request) -> tuple[float, list[tuple[float, float, int]]]:
    """``clients`` workers take the requests from one queue; each record is (ttft, latency, tokens)."""
    queue: asyncio.Queue = asyncio.Queue()
    for request in requests_to_send():
        queue.put_nowait(request)
    records: list[tuple[float, float, int]] = []

    async def worker() -> None:
        while not queue.empty():
            prompt, principle = queue.get_nowait()
            records.append(await one_request(prompt, principle))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, records


def http_request(client: openai.AsyncOpenAI, model: str, max_tokens: int):
    async def one(prompt: str, principle: str) -> tuple[float, float, int]:
        started = time.perf_counter()
        first = None
        tokens = 0
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True}, extra_body={"method": "opad", "principle": principle},
        )  # fmt: skip
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return first or 0.0, time.perf_counter() - started, tokens

    return one


def in_process_request(llm: AlignedLLM, max_tokens: int):
    async def one(prompt: str, principle: str) -> tuple[float, float, int]:
        started = time.perf_counter()
        first = None
        stream = llm.astream(prompt, method="opad", principle=principle, max_new_tokens=max_tokens)
        async for _delta in stream:
            if first is None:
                first = time.perf_counter() - started
        return first or 0.0, time.perf_counter() - started, stream.result.output_tokens

    return one


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "aligned_llm.cli", "serve", "--port", str(port), "--log-level", "warning",
               "--served-model-name", "bench", "--max-queue", "64"]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    if args.dtype:
        command += ["--dtype", args.dtype]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.5)


def bench_http(args: argparse.Namespace) -> list[dict]:
    server = start_server(args, args.port)

    async def loads() -> list[dict]:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="x", max_retries=0,
                                    timeout=3600)  # fmt: skip
        await run_load(1, http_request(client, "bench", 4))
        rows = []
        for clients in CONCURRENCY:
            wall, records = await run_load(clients, http_request(client, "bench", args.max_tokens))
            rows.append(summarise("http", clients, wall, records))
            print(json.dumps(rows[-1]), flush=True)
        return rows

    try:
        return asyncio.run(loads())
    finally:
        server.terminate()
        server.wait(timeout=60)


def bench_in_process(args: argparse.Namespace) -> list[dict]:
    spec = ModelSpec(model=args.model, dtype=args.dtype)
    llm = spec.load()
    asyncio.run(run_load(1, in_process_request(llm, 4)))
    rows = []
    for clients in CONCURRENCY:
        wall, records = asyncio.run(run_load(clients, in_process_request(llm, args.max_tokens)))
        rows.append(summarise("in-process", clients, wall, records))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_ray_data(args: argparse.Namespace) -> list[dict]:
    import ray

    from aligned_llm.ray_data import decode_dataset

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    spec = ModelSpec(model=args.model, dtype=args.dtype)
    rows = []
    try:
        for replicas in (1, 2):
            dataset = ray.data.from_items([{"prompt": prompt} for prompt, _principle in requests_to_send()])
            started = time.perf_counter()
            out = decode_dataset(
                dataset,
                spec,
                replicas=replicas,
                batch_size=REQUESTS // (2 * replicas),
                method="opad",
                principle=PRINCIPLES[0],
                max_new_tokens=args.max_tokens,
            ).take_all()
            wall = time.perf_counter() - started
            tokens = sum(int(row["text_tokens"]) for row in out)
            rows.append({"mode": "ray-data", "replicas": replicas, "requests": len(out), "tokens": tokens,
                         "wall_s": wall, "tokens_per_s": tokens / wall})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    return rows


def write(rows: list[dict], ray_rows: list[dict], out: Path, args: argparse.Namespace) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model or "SmolLM2-135M-Instruct (bundled)", "dtype": args.dtype or "float32",
            "max_tokens": args.max_tokens, "requests": REQUESTS, "method": "opad", "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine()}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "ray_data": ray_rows}, indent=2))
    lines = ["| mode | clients | tokens/s | TTFT p50 (s) | TTFT p95 (s) | latency p50 (s) | latency p95 (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['clients']} | {row['tokens_per_s']:.1f} | {row['ttft_p50_s']:.2f} | "
            f"{row['ttft_p95_s']:.2f} | {row['latency_p50_s']:.2f} | {row['latency_p95_s']:.2f} |"
        )
    if ray_rows:
        lines += ["", "| Ray Data replicas | requests | tokens/s | wall (s, actors' start included) |",
                  "|---:|---:|---:|---:|"]  # fmt: skip
        for r in ray_rows:
            lines.append(f"| {r['replicas']} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['wall_s']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, ray_rows, out.with_suffix(".png"))


def plot(rows: list[dict], ray_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, marker in (("http", "o"), ("in-process", "s")):
        mine = [row for row in rows if row["mode"] == mode]
        left.plot([r["clients"] for r in mine], [r["tokens_per_s"] for r in mine], marker=marker, label=mode)
        right.plot([r["clients"] for r in mine], [r["latency_p50_s"] for r in mine], marker=marker,
                   label=f"{mode} p50")  # fmt: skip
        right.plot([r["clients"] for r in mine], [r["latency_p95_s"] for r in mine], marker=marker, linestyle="--",
                   label=f"{mode} p95")  # fmt: skip
    for row in ray_rows:
        left.axhline(row["tokens_per_s"], color="grey", linestyle=":" if row["replicas"] == 1 else "-.",
                     label=f"Ray Data, {row['replicas']} replica(s)")  # fmt: skip
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
        axis.minorticks_off()
        axis.set_xlabel("concurrent clients")
        axis.legend(fontsize=7)
    left.set_ylabel("aggregate tokens/s")
    right.set_ylabel("request latency (s)")
    figure.suptitle("OPAD over HTTP vs in process (16 requests, mixed principles)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="default: the bundled SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data rows")
    parser.add_argument("--out", default="docs/results/serve")
    args = parser.parse_args()
    rows = bench_http(args) + bench_in_process(args)
    ray_rows = [] if args.no_ray else bench_ray_data(args)
    write(rows, ray_rows, Path(args.out), args)


if __name__ == "__main__":
    main()
