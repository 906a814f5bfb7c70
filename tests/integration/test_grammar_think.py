"""The prompted-thinking switch (instruction + ``think.gbnf``) on a real llama.cpp worker."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.service import free_port
from policies.modes import ThinkingMode
from policies.switches import SwitchTable
from tts_orchestrator.chat_template import ChatTemplate, ChatTemplateInfo
from tts_orchestrator.models.pull import resolve_model_path
from tts_orchestrator.modes import splitter_family
from verifiers.families import get_family
from verifiers.reasoning import split_reasoning

pytestmark = pytest.mark.integration

THINK_FORMAT = re.compile(r"<think>\n(?P<thought>.+?)\n</think>\n\n(?P<answer>\S.*)", re.S)
PROMPTS = [
    "What is 2 + 3? Put your final answer within \\boxed{}.",
    "What is 7 times 6? Put your final answer within \\boxed{}.",
    "Name the largest planet of the solar system.",
    "Is 17 a prime number? Put your final answer within \\boxed{}.",
]


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


def _template(url: str) -> ChatTemplate:
    props = httpx.get(f"{url}/props", timeout=30).json()
    return ChatTemplate(
        ChatTemplateInfo(
            template=props["chat_template"],
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
        )
    )


def test_the_think_grammar_forces_thinking_then_an_answer(worker: str) -> None:
    template = _template(worker)
    table = SwitchTable()
    outputs = []
    for seed, prompt in enumerate(PROMPTS):
        plan = table.plan(
            get_family("generic"), ThinkingMode.SLOW, [{"role": "user", "content": prompt}]
        )
        body = {
            "prompt": plan.prompt(template.render(plan.messages)),
            "grammar": plan.grammar,
            "max_tokens": 384,
            "temperature": 0.7,
            "seed": seed,
        }
        r = httpx.post(f"{worker}/v1/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        outputs.append((choice["text"], choice["finish_reason"], plan))
    for text, finish, _ in outputs:
        assert text.startswith("<think>\n"), text[:80]
        assert text.count("</think>") <= 1
        if finish == "stop":
            assert THINK_FORMAT.fullmatch(text), text[-200:]
    finished = [(t, p) for t, f, p in outputs if f == "stop"]
    assert len(finished) >= len(PROMPTS) // 2, [t[-120:] for t, _, _ in outputs]
    for text, plan in finished:
        reasoning, content = split_reasoning(text, splitter_family(plan))
        assert reasoning.strip() and content.strip()
        assert "<think>" not in content and "</think>" not in content
