import asyncio
import json
from io import StringIO

import pytest
from rich.console import Console

from evals.presets import SamplingPreset
from evals.records import RunStore
from evals.runner import EvalError, EvalRunner, GenerationConfig, RunSettings


def _config(**kw) -> GenerationConfig:
    values = {
        "dataset": "math500",
        "model": "fake-model",
        "n": 2,
        "sampling": SamplingPreset(seed=1000),
        "tts": {"n_branches": 2},
    }
    return GenerationConfig(**(values | kw))


def _runner(tmp_path, server, grader, *, config=None, concurrency=2) -> EvalRunner:
    return EvalRunner(
        config or _config(),
        RunSettings(out_dir=tmp_path, concurrency=concurrency),
        grader=grader,
        app=server.app(),
    )


async def test_run_records_every_sample(tmp_path, fake_server, exact_grader, problems) -> None:
    fake_server.wrong = {"p1"}
    result = await _runner(tmp_path, fake_server, exact_grader).run(
        problems[:3], show_progress=False
    )
    assert [(r.problem_id, r.sample_index) for r in result.records] == [
        (p, i) for p in ("p0", "p1", "p2") for i in (0, 1)
    ]
    first = result.records[0]
    assert (first.answer, first.correct, first.alt_correct) == ("0", True, True)
    assert [r.correct for r in result.records if r.problem_id == "p1"] == [False, False]
    assert (first.thinking_tokens, first.answer_tokens, first.tokens_estimated) == (12, 18, False)
    assert first.tts == {"branches": 2, "trims": 1, "mode": "slow"}
    assert first.reasoning_content == "Add 0 to itself."
    assert first.content == "The answer is \\boxed{0}."
    assert first.model == "fake-model"
    assert first.latency_s is not None
    assert first.ttft_s is not None
    assert (result.reused, result.completed) == (0, 6)


async def test_request_body_carries_prompt_sampling_and_tts(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    config = _config(n=1, extra_body={"reasoning_effort": "low"})
    await _runner(tmp_path, fake_server, exact_grader, config=config).run(
        problems[:1], show_progress=False
    )
    (body,) = fake_server.calls
    assert body["tts"] == {"n_branches": 2}
    assert body["reasoning_effort"] == "low"
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.6, 0.95, 1000)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1]["content"].endswith("within \\boxed{}.")


async def test_non_streaming_mode_reads_the_message(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    config = _config(n=1, stream=False)
    result = await _runner(tmp_path, fake_server, exact_grader, config=config).run(
        problems[:1], show_progress=False
    )
    (record,) = result.records
    assert (record.answer, record.correct, record.ttft_s) == ("0", True, None)
    assert record.tts == {"branches": 2, "trims": 1, "mode": "slow"}


async def test_file_name_is_keyed_by_generation_config(tmp_path, fake_server, exact_grader) -> None:
    base = _runner(tmp_path, fake_server, exact_grader)
    same = EvalRunner(
        _config(),
        RunSettings(out_dir=tmp_path, concurrency=9, base_url="http://elsewhere"),
        grader=exact_grader,
    )
    other = _runner(tmp_path, fake_server, exact_grader, config=_config(tts={"n_branches": 4}))
    assert base.run_path == same.run_path
    assert base.run_path != other.run_path
    assert base.run_path.name == f"math500-{_config().config_hash()}.jsonl"


async def test_resume_after_cancel_redoes_only_unfinished_samples(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    fake_server.hanging = {"p3"}
    runner = _runner(tmp_path, fake_server, exact_grader, concurrency=1)
    task = asyncio.create_task(runner.run(problems, show_progress=False))
    await asyncio.wait_for(fake_server.hang_reached.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Concurrency 1: everything requested before the hanging p3 was finished and flushed.
    finished = RunStore(runner.run_path).finished_keys()
    assert finished == {(p, i) for p in ("p0", "p1", "p2") for i in (0, 1)}

    fake_server.hanging = set()
    fake_server.calls.clear()
    result = await _runner(tmp_path, fake_server, exact_grader).run(problems, show_progress=False)
    every = {(p.id, i) for p in problems for i in (0, 1)}
    assert set(fake_server.requested()) == every - finished
    assert len(fake_server.requested()) == len(every - finished)
    assert (result.reused, result.completed) == (len(finished), len(every - finished))
    assert len(result.records) == len(every)
    assert all(r.correct for r in result.records)


async def test_failed_samples_are_retried_on_resume(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    fake_server.failing = {"p1"}
    first = await _runner(tmp_path, fake_server, exact_grader).run(
        problems[:2], show_progress=False
    )
    failed = [r for r in first.records if r.error is not None]
    assert [r.problem_id for r in failed] == ["p1", "p1"]
    assert "HTTP 502: worker crashed" in (failed[0].error or "")

    fake_server.failing = set()
    fake_server.calls.clear()
    second = await _runner(tmp_path, fake_server, exact_grader).run(
        problems[:2], show_progress=False
    )
    assert sorted(fake_server.requested()) == [("p1", 0), ("p1", 1)]
    assert all(r.error is None and r.correct for r in second.records)


async def test_larger_selection_reuses_the_smaller_run(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    await _runner(tmp_path, fake_server, exact_grader).run(problems[:2], show_progress=False)
    fake_server.calls.clear()
    result = await _runner(tmp_path, fake_server, exact_grader).run(
        problems[:4], show_progress=False
    )
    assert {pid for pid, _ in fake_server.requested()} == {"p2", "p3"}
    assert result.reused == 4


async def test_meta_records_config_and_server(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    runner = _runner(tmp_path, fake_server, exact_grader)
    await runner.run(problems[:1], show_progress=False)
    meta = json.loads(runner.meta_path.read_text())
    assert meta["config_hash"] == _config().config_hash()
    assert meta["config"]["tts"] == {"n_branches": 2}
    assert meta["server"]["data"][0]["id"] == "fake-model"
    assert meta["settings"]["concurrency"] == 2


async def test_unreachable_server_fails_before_writing(tmp_path, exact_grader, problems) -> None:
    runner = EvalRunner(
        _config(),
        RunSettings(out_dir=tmp_path, base_url="http://127.0.0.1:9", request_timeout_s=2),
        grader=exact_grader,
    )
    with pytest.raises(EvalError, match="not reachable"):
        await runner.run(problems[:1], show_progress=False)
    assert not runner.run_path.exists()


async def test_progress_bar_shows_running_accuracy(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    fake_server.wrong = {"p1"}
    output = StringIO()
    console = Console(file=output, width=160, force_terminal=False)
    runner = EvalRunner(
        _config(),
        RunSettings(out_dir=tmp_path),
        grader=exact_grader,
        app=fake_server.app(),
        console=console,
    )
    await runner.run(problems[:2], show_progress=True)
    assert "acc  50.0% (2/4)" in output.getvalue()


class _BrokenGrader:
    async def grade(self, output: str, gold: str):
        raise RuntimeError("pool broke")


async def test_grader_failure_is_recorded_and_retried(
    tmp_path, fake_server, exact_grader, problems
) -> None:
    first = await _runner(tmp_path, fake_server, _BrokenGrader()).run(
        problems[:1], show_progress=False
    )
    assert [r.error for r in first.records] == ["grader: RuntimeError: pool broke"] * 2
    second = await _runner(tmp_path, fake_server, exact_grader).run(
        problems[:1], show_progress=False
    )
    assert [r.correct for r in second.records] == [True, True]
    assert second.completed == 2
