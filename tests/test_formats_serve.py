"""End to end, slow: a tiny model overfit by SFT on one sample in ``hermes``, served by
``vllm serve`` (the CPU build) with ``--enable-auto-tool-choice --tool-call-parser hermes`` on
localhost, answers an OpenAI-style request with ``tools=`` with a parsed ``tool_calls`` entry.

The tiny config's attention heads are halved (head size 32: vLLM's CPU attention supports no
smaller). The served tokenizer renders the tools with the hermes template restlit wrote into
``final/`` at export. The server runs in its own process group and is stopped at the end."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, free_port
from tests.training import tiny_config

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city."}},
                   "required": ["city"]}}}]
QUESTION = "What is the weather in Paris?"
STEPS = 150
START_TIMEOUT_S = 600


def _one_sample(directory: Path) -> Path:
    """A raw ToolRL record: one tool, one question, one call."""
    record = json.loads((FIXTURES / "toolrl_tiny.json").read_text())[1]
    tools = record["instruction"].split("1. Name: ")[1].split("\n\n")[0]
    record["instruction"] = record["instruction"].replace(
        tools, 'get_weather\nDescription: Current weather of a city.\n'
               'Parameters: {"city": {"description": "The city.", "type": "str"}}')
    record["input"] = f"**Dialogue Records History**\n<user> {QUESTION} </user>"
    record["output"] = ('<think> </think>\n<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n'
                        "</tool_call>")
    path = directory / "one.json"
    path.write_text(json.dumps([record]))
    return path


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def test_vllm_serves_a_hermes_trained_model_with_parsed_tool_calls(tmp_path):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from restlit.training.run import sft

    cfg = tiny_config(tmp_path, "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
                      f"data.raw=[{_one_sample(tmp_path)}]", "data.val_fraction=0", "data.tool_format=hermes",
                      f"sft.max_steps={STEPS}", "sft.batch_size=1", "sft.lr=1e-2")
    final = sft(cfg) / "final"

    # the overfit model writes the call under the template vLLM will use (checked in-process first)
    tok, model = AutoTokenizer.from_pretrained(final), AutoModelForCausalLM.from_pretrained(final)
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tools=TOOLS, tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    text = tok.decode(model.generate(**ids, max_new_tokens=40, do_sample=False)[0][ids["input_ids"].shape[1]:],
                      skip_special_tokens=True)
    assert text == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', text

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen(
        # `vllm serve` itself is this module behind a CLI that asks importlib.metadata for the
        # version of a distribution named "vllm": the CPU build installs as "vllm-cpu", so the CLI
        # stops there (PackageNotFoundError). The server module takes the same arguments.
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(final), "--served-model-name", "tiny",
         "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--host", "127.0.0.1", "--port", str(port),
         "--max-model-len", "1024", "--dtype", "float32", "--enforce-eager"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, "vllm serve did not start in time"
                time.sleep(2)
        reply = _post(base + "/v1/chat/completions",
                      {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "tools": TOOLS,
                       "temperature": 0, "max_tokens": 40}, timeout=300)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    choice = reply["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and len(calls) == 1
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
