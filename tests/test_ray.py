"""Scale-out on a local Ray (2 CPUs, offline): Ray Data decoding and pairs, and the server as a Ray Serve replica."""

from __future__ import annotations

import os
import socket

import openai
import pytest
import ray

from aligned_llm.cli import main
from aligned_llm.spec import ModelSpec
from tests.serving import LOCALHOST, WAIT_S

pytestmark = pytest.mark.allow_hosts(LOCALHOST)

PROMPTS = ["Tell me about the sea.", "Name three rivers.", "Why is the sky blue?", "Write a haiku.", "Hi!"]
PRINCIPLE = "Answer like a pirate."


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on 127.0.0.1: no dashboard, no usage report, no auth token written to the home folder."""
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=200 * 1024**2)  # fmt: skip
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    yield
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_ray_data_decodes_like_the_library_and_pairs_write_the_same_jsonl(
    local_ray, tiny_dir, tiny_adapter_dir, tiny_pair_llm, tmp_path
):
    from aligned_llm.ray_data import decode_dataset

    spec = ModelSpec(model=str(tiny_dir), adapter=str(tiny_adapter_dir), device="cpu")
    dataset = ray.data.from_items([{"prompt": prompt} for prompt in PROMPTS])
    settings = {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 6}
    rows = decode_dataset(dataset, spec, replicas=2, batch_size=2, **settings).take_all()
    assert [row["prompt"] for row in rows] == PROMPTS
    assert [row["text"] for row in rows] == [result.text for result in tiny_pair_llm.generate(PROMPTS, **settings)]

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS))
    common = [str(prompts_file), "--model", str(tiny_dir), "--adapter", str(tiny_adapter_dir), "--device", "cpu",
              "--max-new-tokens", "6", "--batch-size", "2"]  # fmt: skip
    assert main(["pairs", *common, "--out", str(tmp_path / "local.jsonl")]) == 0
    assert main(["pairs", *common, "--out", str(tmp_path / "ray.jsonl"), "--ray", "--replicas", "2"]) == 0
    local = (tmp_path / "local.jsonl").read_text()
    assert local and (tmp_path / "ray.jsonl").read_text() == local


def test_ray_serve_replica_answers_like_the_library(local_ray, tiny_dir, tiny_llm):
    from ray import serve

    from aligned_llm.server.ray_serve import application

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        spec = ModelSpec(model=str(tiny_dir), device="cpu")
        serve.run(application(spec, replicas=1, served_model_name="tiny"), name="aligned-llm", route_prefix="/")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=WAIT_S)
        options = {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 6,
                   "extra_body": {"method": "linear", "principle": PRINCIPLE}}  # fmt: skip
        expected = tiny_llm.generate(PROMPTS[0], method="linear", principle=PRINCIPLE, max_new_tokens=6).text
        assert client.chat.completions.create(**options).choices[0].message.content == expected
        chunks = client.chat.completions.create(stream=True, **options)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == expected
        with pytest.raises(openai.BadRequestError, match="rho"):
            client.chat.completions.create(**{**options, "extra_body": {"method": "linear", "principle": "p",
                                                                        "rho": -1}})  # fmt: skip
    finally:
        serve.shutdown()
