"""ReplayBackend over the real recorded traces in evals/data/traces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tts_orchestrator.backends.base import CompletionChunk, SamplingParams
from tts_orchestrator.backends.replay import (
    ReplayBackend,
    TraceIndex,
    common_prefix_len,
    pseudo_token_id,
    pseudo_tokens,
)
from tts_orchestrator.config import ReplayConfig
from tts_orchestrator.exceptions import ConfigError, WorkerError
from verifiers.traces import ThinkingSplit, Trace, load_traces

TRACE_DIR = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
FAST = 1e6  # tokens/s: every token is due at once, for tests of content rather than timing
# thought-anchors problem MATH-1591: one correct + one incorrect trace in each of two files.
FU_MANCHU = "Dr. Fu Manchu has a bank account"


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return load_traces(sorted(TRACE_DIR.glob("*.jsonl")))


def backend(traces: Sequence[Trace], **kwargs: object) -> ReplayBackend:
    rate = kwargs.pop("tokens_per_s", FAST)
    parallel = kwargs.pop("max_parallel", 64)
    config = ReplayConfig(tokens_per_s=rate, max_parallel=parallel)  # type: ignore[arg-type]
    return ReplayBackend(config, traces=traces, **kwargs)  # type: ignore[arg-type]


def group_of(traces: Sequence[Trace], needle: str) -> list[Trace]:
    return sorted((t for t in traces if needle in t.problem), key=lambda t: (t.model, t.id))


def pick(traces: Sequence[Trace], *, model: str, split: ThinkingSplit) -> Trace:
    return next(t for t in traces if model in t.model and t.split is split and t.complete)


async def collect(
    b: ReplayBackend, prompt: str, *, request_id: str = "r", **params: object
) -> tuple[str, list[CompletionChunk]]:
    chunks = [
        c
        async for c in b.stream_completion(
            prompt,
            SamplingParams.model_validate(params),
            request_id=request_id,
        )
    ]
    return "".join(c.text for c in chunks), chunks


async def prompt_for(b: ReplayBackend, trace: Trace) -> str:
    return await b.apply_chat_template([{"role": "user", "content": f"Solve: {trace.problem}"}])


# -- pseudo-tokens --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello, world!", ["Hello", ",", " world", "!"]),
        ("x = 12345", ["x", " =", " ", "123", "45"]),
        ("So I\n\nthis  one", ["So", " I", "\n\n", "this", "  ", "one"]),
        ("internationalization", ["internat", "ionaliza", "tion"]),
        ("\\boxed{6.17}", ["\\", "boxed", "{", "6", ".", "17", "}"]),
        ("a_b", ["a", "_", "b"]),
        ("", []),
    ],
    ids=[
        "words-punct",
        "digit-groups",
        "whitespace-runs",
        "long-word",
        "latex",
        "underscore",
        "empty",
    ],
)
def test_pseudo_tokens_split(text: str, pieces: list[str]) -> None:
    assert pseudo_tokens(text) == pieces


def test_pseudo_tokens_cover_recorded_outputs(traces: list[Trace]) -> None:
    sample = traces[::10]  # every file, every split kind; ~0.8 MB of real text
    assert {t.split for t in sample} == set(ThinkingSplit)
    assert all("".join(pseudo_tokens(t.output)) == t.output for t in sample)


async def test_tokenize_is_deterministic_and_stable(traces: list[Trace]) -> None:
    text = traces[0].output[:2000]
    a, b = backend(traces[:1]), backend(traces[:1])
    ids = await a.tokenize(text)
    assert ids == await b.tokenize(text) == await a.tokenize(text)
    assert len(ids) == await a.count_tokens(text) == len(pseudo_tokens(text))
    # blake2b, not hash(): the same value in every process (pinned).
    assert pseudo_token_id("Hello") == 214367772
    assert pseudo_token_id("Hello") != pseudo_token_id(" Hello")


@pytest.mark.parametrize(
    ("a", "b", "start", "expected"),
    [
        ("abcdef", "abcxyz", 0, 3),
        ("abc", "abc", 0, 3),
        ("", "abc", 0, 0),
        ("xxabcd", "abzz", 2, 2),
        ("q" * 10000 + "a", "q" * 10000 + "b", 0, 10000),
    ],
    ids=["mismatch", "equal", "empty", "offset", "past-one-block"],
)
def test_common_prefix_len(a: str, b: str, start: int, expected: int) -> None:
    assert common_prefix_len(a, b, a_start=start) == expected


# -- selection ------------------------------------------------------------------------------------
async def test_seed_selects_trace_within_problem_group(traces: list[Trace]) -> None:
    group = group_of(traces, FU_MANCHU)
    assert len(group) == 4  # two models x (correct, incorrect)
    b = backend(traces)
    prompt = await prompt_for(b, group[0])
    outputs = {}
    for seed in range(6):
        text, _ = await collect(b, prompt, seed=seed, max_tokens=40)
        outputs[seed] = text
        assert group[seed % 4].output.startswith(text)
    assert len({outputs[s] for s in range(4)}) == 4
    assert outputs[4] == outputs[0]
    assert outputs[5] == outputs[1]


def test_index_prefers_the_longest_contained_problem(traces: list[Trace]) -> None:
    index = TraceIndex(traces)
    inner = next(t for t in traces if t.problem.startswith("A particular star"))
    outer = next(t for t in traces if t.problem != inner.problem and inner.problem in t.problem)
    found = index.find(f"Q: {outer.problem}")
    assert found is not None
    assert found[0][0].problem == outer.problem


async def test_unknown_prompt_is_an_error_or_the_fallback(traces: list[Trace]) -> None:
    with pytest.raises(WorkerError, match="none of its"):
        await collect(backend(traces[:5]), "What is the capital of France?")
    text, chunks = await collect(
        backend(traces[:5], fallback_text="Paris."), "What is the capital of France?"
    )
    assert text == "Paris."
    assert chunks[-1].finish_reason == "stop"


def test_config_trace_paths_load_relative_to_base_dir() -> None:
    files = [
        f"evals/data/traces/thought-anchors_deepseek-r1-distill-{m}_math.jsonl"
        for m in ("llama-8b", "qwen-14b")
    ]
    config = ReplayConfig(traces=files, tokens_per_s=200.0, max_parallel=64)
    b = ReplayBackend(config, base_dir=TRACE_DIR.parents[2], name="pool/replay")
    assert (b.name, b.index.n_traces) == ("pool/replay", 40)


def test_no_traces_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no traces"):
        ReplayBackend(ReplayConfig(tokens_per_s=200.0, max_parallel=64), traces=[])


# -- finishing ------------------------------------------------------------------------------------
async def test_max_tokens_finishes_with_length(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces)
    text, chunks = await collect(b, await prompt_for(b, trace), max_tokens=37)
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert sum(c.n_tokens for c in chunks) == 37
    assert len(pseudo_tokens(text)) == 37
    assert last.usage is not None
    assert last.usage.completion_tokens == 37
    assert trace.output.startswith(text)


async def test_stop_string_is_excluded_and_finishes_with_stop(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces)
    stop = trace.output[300:312]
    text, chunks = await collect(b, await prompt_for(b, trace), max_tokens=4000, stop=[stop])
    assert chunks[-1].finish_reason == "stop"
    assert text == trace.output[: trace.output.find(stop)]


@pytest.mark.parametrize(("complete", "finish"), [(True, "stop"), (False, "length")])
async def test_end_of_recording(traces: list[Trace], complete: bool, finish: str) -> None:
    trace = min((t for t in traces if t.complete is complete), key=lambda t: len(t.output))
    b = backend([trace])
    text, chunks = await collect(b, await prompt_for(b, trace), max_tokens=100000)
    assert text == trace.output
    assert chunks[-1].finish_reason == finish  # a cut-off recording ended at its token cap


# -- pacing ---------------------------------------------------------------------------------------
async def test_rate_is_accurate(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces, tokens_per_s=500.0)
    prompt = await prompt_for(b, trace)
    start = time.perf_counter()
    _, chunks = await collect(b, prompt, max_tokens=200)
    elapsed = time.perf_counter() - start
    assert 200 / elapsed == pytest.approx(500, rel=0.10)
    assert len(chunks) >= 50  # paced, not one burst
    timings = chunks[-1].timings
    assert timings is not None
    assert timings["predicted_per_second"] == pytest.approx(500, rel=0.10)


async def test_many_concurrent_streams_finish(traces: list[Trace]) -> None:
    group = group_of(traces, FU_MANCHU)
    b = backend(traces, tokens_per_s=1000.0)
    prompt = await prompt_for(b, group[0])
    start = time.perf_counter()
    results = await asyncio.gather(
        *(collect(b, prompt, request_id=f"r{i}", seed=i, max_tokens=60) for i in range(64))
    )
    elapsed = time.perf_counter() - start
    for i, (text, chunks) in enumerate(results):
        assert chunks[-1].finish_reason == "length"
        assert text == "".join(pseudo_tokens(group[i % 4].output)[:60])
    assert elapsed < 0.5  # 60 ms each in parallel; one after another would take 3.8 s
    assert (await b.metrics()).requests_running == 0


async def test_streams_beyond_max_parallel_queue(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces, tokens_per_s=200.0, max_parallel=2)
    prompt = await prompt_for(b, trace)
    tasks = [
        asyncio.create_task(collect(b, prompt, request_id=f"q{i}", max_tokens=4)) for i in range(3)
    ]
    await asyncio.sleep(0.005)
    m = await b.metrics()
    assert (m.requests_running, m.requests_waiting) == (2, 1)
    assert all(chunks[-1].finish_reason == "length" for _, chunks in await asyncio.gather(*tasks))
    m = await b.metrics()
    assert (m.requests_running, m.requests_waiting) == (0, 0)


# -- abort ----------------------------------------------------------------------------------------
async def test_abort_ends_the_stream_promptly(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces, tokens_per_s=2.0)  # the first token is 500 ms away
    consumer = asyncio.create_task(collect(b, await prompt_for(b, trace), request_id="x"))
    await asyncio.sleep(0.01)
    assert (await b.metrics()).requests_running == 1
    start = time.perf_counter()
    await b.abort("x")
    text, chunks = await consumer
    assert time.perf_counter() - start < 0.1
    assert (text, chunks) == ("", [])  # ends like a closed HTTP stream: no further chunk
    m = await b.metrics()
    assert m.requests_running == 0
    assert m.raw["replay_requests_aborted_total"] == 1
    await b.abort("x")  # already finished: a no-op


async def test_cancelling_the_consumer_releases_the_request(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces, tokens_per_s=2.0, max_parallel=1)
    prompt = await prompt_for(b, trace)
    running = asyncio.create_task(collect(b, prompt, request_id="c1"))
    queued = asyncio.create_task(collect(b, prompt, request_id="c2"))
    await asyncio.sleep(0.01)
    m = await b.metrics()
    assert (m.requests_running, m.requests_waiting) == (1, 1)
    start = time.perf_counter()
    for task in (running, queued):
        task.cancel()
    await asyncio.gather(running, queued, return_exceptions=True)
    assert time.perf_counter() - start < 0.1
    m = await b.metrics()
    assert (m.requests_running, m.requests_waiting) == (0, 0)
    again = asyncio.create_task(collect(b, prompt, request_id="c1"))  # the id and slot are free
    await asyncio.sleep(0.01)
    assert (await b.metrics()).requests_running == 1
    await b.abort("c1")
    assert await again == ("", [])


# -- continuation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "split", "close"),
    [
        ("DeepSeek-R1-Distill-Qwen", ThinkingSplit.MARKER, "</think>"),
        ("Sky-T1", ThinkingSplit.MARKER, "<|end_of_thought|>"),
        ("Sky-T1", ThinkingSplit.FINAL_ANSWER_HEADING, "<|end_of_thought|>"),
    ],
    ids=["r1-think-tags", "sky-t1-tags", "sky-t1-tagless"],
)
async def test_injected_close_streams_the_answer_section(
    traces: list[Trace], model: str, split: ThinkingSplit, close: str
) -> None:
    trace = pick(traces, model=model, split=split)
    seed = group_of(traces, trace.problem).index(trace)
    b = backend(traces)
    prompt = await prompt_for(b, trace)
    head, first = await collect(b, prompt, request_id="a", seed=seed, max_tokens=80)
    assert first[-1].usage is not None
    injected = f"\n\nTime to give the answer.\n{close}"
    continued = prompt + head + injected
    answer, chunks = await collect(b, continued, request_id="b", seed=seed + 1, max_tokens=100000)
    assert answer == trace.answer_text
    assert answer
    assert chunks[-1].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.cached_prompt_tokens is not None
    # the continuation hits the simulated prefix cache: original prompt + generated head.
    assert usage.cached_prompt_tokens >= first[-1].usage.prompt_tokens + 80 - 1
    assert usage.cached_prompt_tokens < usage.prompt_tokens


async def test_answer_already_started_by_the_injection_is_not_repeated(
    traces: list[Trace],
) -> None:
    trace = pick(traces, model="DeepSeek-R1-Distill-Llama", split=ThinkingSplit.MARKER)
    b = backend(traces)
    prompt = await prompt_for(b, trace)
    cue = trace.answer_text[:5]
    answer, _ = await collect(b, prompt + "Okay.</think>" + cue, max_tokens=100000)
    assert cue + answer == trace.answer_text


async def test_resumed_prompt_continues_the_recording_and_ignores_seed(
    traces: list[Trace],
) -> None:
    group = group_of(traces, FU_MANCHU)
    b = backend(traces)
    prompt = await prompt_for(b, group[0])
    head, _ = await collect(b, prompt, request_id="h", seed=3, max_tokens=50)
    rest, _ = await collect(b, prompt + head, request_id="t", seed=0, max_tokens=30)
    expected = group[3].output
    assert (head + rest) == expected[: len(head + rest)]
    assert len(rest) > 0
    # injected text that does not close thinking: the recording goes on after the prefix.
    more, _ = await collect(b, prompt + head + "\n\nWait,", request_id="w", seed=0, max_tokens=30)
    assert expected[len(head) :].startswith(more)


async def test_closing_an_unfinished_trace_synthesizes_the_recorded_final_answer(
    traces: list[Trace],
) -> None:
    trace = next(t for t in traces if not t.has_answer_section and t.final_answer)
    b = backend([trace])
    answer, _ = await collect(b, await prompt_for(b, trace) + "So.\n<|end_of_thought|>\n\n")
    assert f"\\boxed{{{trace.final_answer}}}" in answer


# -- logprobs, template, health --------------------------------------------------------------------
async def test_pseudo_logprobs_are_deterministic_and_bounded(traces: list[Trace]) -> None:
    trace = group_of(traces, FU_MANCHU)[0]
    b = backend(traces)
    prompt = await prompt_for(b, trace)

    async def logprobs(seed: int) -> list[float]:
        _, chunks = await collect(b, prompt, seed=seed, max_tokens=50, logprobs=0)
        return [lp for c in chunks for lp in c.token_logprobs or []]

    first = await logprobs(0)
    assert len(first) == 50
    assert all(-3.0 <= lp <= 0.0 for lp in first)
    assert first == await logprobs(0)
    assert first != await logprobs(1)
    _, plain = await collect(b, prompt, max_tokens=5)
    assert all(c.token_logprobs is None for c in plain)


async def test_chat_template(traces: list[Trace]) -> None:
    r1 = group_of(traces, FU_MANCHU)[0]
    sky = pick(traces, model="Sky-T1", split=ThinkingSplit.MARKER)
    b = backend(traces)
    assert await b.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ) == ("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n")
    assert (await prompt_for(b, r1)).endswith("<|assistant|>\n<think>\n")  # output starts inside
    assert (await prompt_for(b, sky)).endswith("<|assistant|>\n")  # output opens its own tag
    no_think = await b.apply_chat_template(
        [{"role": "user", "content": sky.problem}], template_kwargs={"enable_thinking": False}
    )
    answer, _ = await collect(b, no_think, max_tokens=100000)
    assert no_think.endswith("<|end_of_thought|>\n\n")
    assert answer == sky.answer_text.lstrip("\n")


async def test_health_until_closed(traces: list[Trace]) -> None:
    b = backend(traces[:3])
    assert await b.health()
    await b.aclose()
    assert not await b.health()
