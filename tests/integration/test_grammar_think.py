"""The prompted-thinking switch (instruction + ``think.gbnf``) on a real llama.cpp worker.

SmolLM2-135M rarely closes its thinking by itself (the 1.5B Qwen does: see the "Prompted
thinking grammar" section of docs/benchmarks.md), so the thinking budget closes it here as the
orchestrator does: the text so far plus the close marker, continued without the grammar.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.service import free_port
from policies.modes import ThinkingMode
from policies.switches import ModePlan, SwitchTable
from tts_orchestrator.backends.chat_template import ChatTemplate, ChatTemplateInfo
from tts_orchestrator.models.pull import resolve_model_path
from tts_orchestrator.modes.resolution import splitter_family
from verifiers.families import get_family
from verifiers.reasoning import split_reasoning

pytestmark = pytest.mark.integration

CLOSED = re.compile(r"<think>\n(?P<thought>\S.*?)\n?</think>\n\n?(?P<answer>\S.*)", re.S)
PROMPTS = [
    "What is 2 + 3? Put your final answer within \\boxed{}.",
    "What is 7 times 6? Put your final answer within \\boxed{}.",
    "Name the largest planet of the solar system.",
    "What is the capital of France?",
]
THINK_TOKENS = 96


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    """A llama.cpp worker serving SmolLM2-135M-Instruct."""
    model = resolve_model_path("smollm2-135m-instruct")
    port = free_port()
    cmd = [sys.executable, "-m", "tts_orchestrator.backends.llamacpp_server"]
    cmd += ["--model", str(model), "--port", str(port), "--parallel", "2", "--ctx", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, "worker exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("worker not healthy after 180s")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def template(worker: str) -> ChatTemplate:
    props = httpx.get(f"{worker}/props", timeout=30).json()
    return ChatTemplate(
        ChatTemplateInfo(
            template=props["chat_template"],
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
        )
    )


def complete(url: str, body: dict[str, Any]) -> tuple[str, str]:
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return str(choice["text"]), str(choice["finish_reason"])


def slow_plan(prompt: str) -> ModePlan:
    family = get_family("generic")
    return SwitchTable().plan(family, ThinkingMode.SLOW, [{"role": "user", "content": prompt}])


@pytest.mark.parametrize(("seed", "prompt"), list(enumerate(PROMPTS)), ids=range(len(PROMPTS)))
def test_the_think_grammar_forces_thinking_then_an_answer(
    worker: str, template: ChatTemplate, seed: int, prompt: str
) -> None:
    plan = slow_plan(prompt)
    assert plan.grammar is not None
    assert plan.split_family == "prompted_think"
    prompt_text = plan.prompt(template.render(plan.messages))
    sampling = {"temperature": 0.7, "seed": seed}
    text, finish = complete(
        worker,
        {"prompt": prompt_text, "grammar": plan.grammar, "max_tokens": THINK_TOKENS, **sampling},
    )
    assert text.startswith("<think>\n")
    assert not text[len("<think>\n") :].startswith((" ", "\n"))
    reasoning, content = split_reasoning(text, splitter_family(plan))
    assert "<think>" not in reasoning
    assert text.count("</think>") <= 1
    if "</think>" in text:
        assert CLOSED.fullmatch(text), text
    else:
        # The budget is spent inside the thinking: close it and let the model answer freely.
        assert finish == "length"
        assert content == ""
        text += "\n</think>\n\n"
        answer, _ = complete(worker, {"prompt": prompt_text + text, "max_tokens": 48, **sampling})
        text += answer
    reasoning, content = split_reasoning(text, splitter_family(plan))
    assert reasoning.strip()
    assert content.strip()
    assert "</think>" not in reasoning
    assert "</think>" not in content
