"""The replay engine serving modes: one problem's fast record, thinking trace and probe.

The prompts are the service's own: the replay chat template plus the plan of the family's real
thinking switch (``policies.switches``), so a test breaks when either stops selecting by mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from policies.modes import ThinkingMode
from policies.switches import SwitchTable
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.replay import ReplayBackend, mode_group
from tts_orchestrator.config import ReplayConfig
from tts_orchestrator.config.pools import ReplayTokenizer
from verifiers.families import get_family
from verifiers.reasoning import ReasoningSplitter
from verifiers.traces import Trace, load_traces
from verifiers.traces.tokens import TokenCounter

TRACE_DIR = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
PAIR = ("mip_qwen2.5-32b-instruct_gsm8k.jsonl", "mip_qwq-32b_gsm8k.jsonl")
R1 = "mip_r1-distill-qwen-32b_gsm8k.jsonl"


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return load_traces([TRACE_DIR / name for name in (*PAIR, R1)])


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.qwen25()


def of(traces: Sequence[Trace], model: str, problem_id: str) -> Trace:
    return next(t for t in traces if t.model == model and t.problem_id == problem_id)


def backend(traces: Sequence[Trace], **config: object) -> ReplayBackend:
    return ReplayBackend(ReplayConfig(tokens_per_s=1e6, **config), traces=traces)


async def switched_prompt(b: ReplayBackend, family: str, mode: ThinkingMode, problem: str) -> str:
    """What the service sends: the replay template of the switched messages, plus the prefill."""
    plan = SwitchTable().plan(get_family(family), mode, [{"role": "user", "content": problem}])
    rendered = await b.apply_chat_template(plan.messages, template_kwargs=plan.template_kwargs)
    return plan.prompt(rendered)


async def stream(b: ReplayBackend, prompt: str, *, max_tokens: int = 1 << 16) -> tuple[str, int]:
    params = SamplingParams(max_tokens=max_tokens)
    text, tokens = "", 0
    async for chunk in b.stream_completion(prompt, params, request_id="r"):
        text += chunk.text
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return text, tokens


@pytest.mark.parametrize(
    ("family", "mode", "model"),
    [
        ("qwq", ThinkingMode.FAST, "Qwen2.5-32B-Instruct"),
        ("qwq", ThinkingMode.SLOW, "QwQ-32B"),
        ("deepseek_r1", ThinkingMode.FAST, "Qwen2.5-32B-Instruct"),
        ("generic", ThinkingMode.FAST, "Qwen2.5-32B-Instruct"),
    ],
    ids=[
        "qwq-fast-is-the-instruct-answer",
        "qwq-slow-is-the-thinking-trace",
        "r1-fast",
        "generic-fast-by-its-instruction",
    ],
)
async def test_the_switched_prompt_streams_that_modes_record(
    traces: list[Trace], family: str, mode: ThinkingMode, model: str
) -> None:
    pair = [t for t in traces if t.model in {"Qwen2.5-32B-Instruct", "QwQ-32B"}]
    b = backend(pair)
    for problem_id in ("gsm8k/0", "gsm8k/7"):
        record = of(pair, model, problem_id)
        text, _ = await stream(b, await switched_prompt(b, family, mode, record.problem))
        assert text == record.output


async def test_slow_prompt_opens_the_thinking_block_as_recorded(traces: list[Trace]) -> None:
    """The output starts inside thinking, so the service's splitter finds the close marker."""
    b = backend([t for t in traces if t.model != "DeepSeek-R1-Distill-Qwen-32B"])
    qwq = of(traces, "QwQ-32B", "gsm8k/0")
    prompt = await switched_prompt(b, "qwq", ThinkingMode.SLOW, qwq.problem)
    assert prompt.endswith("<|assistant|>\n<think>\n")
    text, _ = await stream(b, prompt)
    assert text.index("</think>") == qwq.thinking_end


async def test_a_probe_is_the_fast_record_cut_at_its_cap(traces: list[Trace]) -> None:
    b = backend(traces)
    fast = of(traces, "Qwen2.5-32B-Instruct", "gsm8k/3")
    prompt = await switched_prompt(b, "qwq", ThinkingMode.FAST, fast.problem)
    text, tokens = await stream(b, prompt, max_tokens=20)
    assert tokens == 20
    assert fast.output.startswith(text)
    assert text != fast.output


async def test_two_thinkers_are_chosen_by_seed_never_the_fast_record(traces: list[Trace]) -> None:
    b = backend(traces)
    problem = of(traces, "QwQ-32B", "gsm8k/6").problem
    prompt = await switched_prompt(b, "qwq", ThinkingMode.SLOW, problem)
    outputs = set()
    for seed in range(4):
        params = SamplingParams(max_tokens=1 << 16, seed=seed)
        chunks = [c async for c in b.stream_completion(prompt, params, request_id=f"s{seed}")]
        outputs.add("".join(c.text for c in chunks))
    thinkers = {
        of(traces, m, "gsm8k/6").output for m in ("QwQ-32B", "DeepSeek-R1-Distill-Qwen-32B")
    }
    assert outputs == thinkers


def test_mode_group_leaves_single_kind_groups_alone(traces: list[Trace]) -> None:
    qwq = [of(traces, "QwQ-32B", "gsm8k/0")]
    assert mode_group(qwq, "<think>\n\n</think>\n\n", problem_end=0) == qwq
    fast = [of(traces, "Qwen2.5-32B-Instruct", "gsm8k/0")]
    assert mode_group(fast, "<think>\n", problem_end=0) == fast


async def test_qwen_tokenizer_counts_what_the_model_spent(
    traces: list[Trace], counter: TokenCounter
) -> None:
    pair = [t for t in traces if t.model != "DeepSeek-R1-Distill-Qwen-32B"]
    b = backend(pair, tokenizer=ReplayTokenizer.QWEN25)
    for model in ("Qwen2.5-32B-Instruct", "QwQ-32B"):
        record = of(traces, model, "gsm8k/12")
        mode = ThinkingMode.FAST if model.endswith("Instruct") else ThinkingMode.SLOW
        text, tokens = await stream(b, await switched_prompt(b, "qwq", mode, record.problem))
        assert text == record.output
        assert tokens == counter.count(record.output)
    assert await b.count_tokens("Hello world") == counter.count("Hello world")


@pytest.mark.parametrize(
    "text",
    ["", "Hello, world!", "€ 3 · 4 = 12 ✓ 数学", "\\[ \\boxed{540} \\]\n\n"],
    ids=["empty", "ascii", "multibyte", "latex"],
)
def test_bpe_pieces_join_back_one_per_token(counter: TokenCounter, text: str) -> None:
    pieces = counter.pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == counter.count(text)


async def test_prompted_thinking_slow_streams_the_tags_the_service_splits(
    traces: list[Trace],
) -> None:
    """Family ``generic``: slow is a system instruction (+ grammar); the template opens no
    block, so the trace comes with its open marker and splits as ``prompted_think``."""
    pair = [t for t in traces if t.model in {"Qwen2.5-32B-Instruct", "QwQ-32B"}]
    b = backend(pair)
    qwq = of(pair, "QwQ-32B", "gsm8k/0")
    prompt = await switched_prompt(b, "generic", ThinkingMode.SLOW, qwq.problem)
    assert prompt.endswith("<|assistant|>\n")
    text, _ = await stream(b, prompt)
    assert text == "<think>\n" + qwq.output
    splitter = ReasoningSplitter(get_family("prompted_think"))
    reasoning, content = splitter.feed(text)
    assert reasoning.strip() == qwq.thinking_text.strip()
    assert content.strip() == qwq.answer_text.strip()
