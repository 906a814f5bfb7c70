"""Runs a dataset through an OpenAI-compatible endpoint and records every graded sample.

Output: ``<out_dir>/<dataset>-<hash>.jsonl`` (one :class:`SampleRecord` per line, append-only) and
``<out_dir>/<dataset>-<hash>.meta.json``. The hash covers only what changes the model's outputs
(:class:`GenerationConfig`), not the problem selection, concurrency or URL: a later run with the
same generation config, a larger ``--limit`` or after a kill reuses every finished sample.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from evals.client import ChatClient, ChatRequestError, ChatResult
from evals.datasets import Problem, dataset_label
from evals.presets import PROMPT_PRESETS, PromptPresetName, SamplingPreset
from evals.records import RunStore, SampleRecord, dump_json, split_tokens

log = logging.getLogger(__name__)

__all__ = [
    "EvalError",
    "EvalRunner",
    "GenerationConfig",
    "Grade",
    "ResponseGrader",
    "RunResult",
    "RunSettings",
]


class EvalError(RuntimeError):
    """The run cannot start (server unreachable, config mismatch)."""


class Grade(Protocol):
    """What the runner reads from ``verifiers.grading.GradeResult``."""

    @property
    def extracted(self) -> str | None: ...
    @property
    def verdict(self) -> bool: ...
    @property
    def alt_verdict(self) -> bool: ...
    @property
    def timed_out(self) -> bool: ...


class ResponseGrader(Protocol):
    """What the runner needs from ``verifiers.grading.Grader``."""

    async def grade(self, output: str, gold: str) -> Grade: ...


class GenerationConfig(BaseModel):
    """Everything that changes what the model writes; hashed into the run's file name."""

    model_config = ConfigDict(frozen=True)

    dataset: str = Field(description="Builtin dataset name or JSONL path.")
    model: str = Field(default="default", description="`model` field of each request.")
    n: int = Field(default=1, ge=1, description="Samples per problem.")
    prompt: PromptPresetName = Field(default=PromptPresetName.BOXED)
    sampling: SamplingPreset = Field(default_factory=SamplingPreset)
    tts: dict[str, Any] | None = Field(default=None, description="The request's `tts` block.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Other body fields, e.g. reasoning_effort."
    )
    stream: bool = Field(default=True, description="Stream responses (needed for TTFT).")

    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def request_body(self, problem: Problem, *, sample_index: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": PROMPT_PRESETS[self.prompt].messages(problem),
            **self.sampling.body(sample_index=sample_index),
            **self.extra_body,
        }
        if self.tts is not None:
            body["tts"] = self.tts
        return body


class RunSettings(BaseModel):
    """How to reach the server and how hard to push it; not part of the hash."""

    base_url: str = Field(default="http://127.0.0.1:8000", description="Server root URL.")
    api_key: str | None = Field(default=None, description="Bearer token, if the server wants one.")
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once.")
    request_timeout_s: float = Field(default=1800.0, gt=0, description="Per-request timeout.")
    out_dir: Path = Field(default=Path("runs"), description="Where run files are written.")
    store_text: bool = Field(default=True, description="Keep response texts in the records.")
    preflight: bool = Field(default=True, description="GET /v1/models before starting.")


class RunResult(BaseModel):
    records: list[SampleRecord] = Field(description="Records of the selected problems.")
    run_path: Path
    meta_path: Path
    reused: int = Field(description="Samples taken from an earlier (interrupted) run.")
    completed: int = Field(description="Samples requested in this run.")


class AccuracyColumn(ProgressColumn):
    """Running accuracy over graded samples, including resumed ones."""

    def render(self, task: Task) -> Text:
        graded = int(task.fields.get("graded", 0))
        correct = int(task.fields.get("correct", 0))
        if graded == 0:
            return Text("acc  —", style="dim")
        return Text(f"acc {100.0 * correct / graded:5.1f}% ({correct}/{graded})", style="green")


class ErrorColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        errors = int(task.fields.get("errors", 0))
        return Text(f"err {errors}", style="red" if errors else "dim")


def _progress(console: Console | None, *, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        AccuracyColumn(),
        ErrorColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


class EvalRunner:
    """Runs problems x n samples with bounded concurrency, appending records as they finish."""

    def __init__(
        self,
        config: GenerationConfig,
        settings: RunSettings,
        *,
        grader: ResponseGrader,
        app: Any | None = None,
        console: Console | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self._grader = grader
        self._app = app
        self._console = console
        stem = f"{dataset_label(config.dataset)}-{config.config_hash()}"
        self.run_path = settings.out_dir / f"{stem}.jsonl"
        self.meta_path = settings.out_dir / f"{stem}.meta.json"
        self._store = RunStore(self.run_path)

    def _http_client(self) -> httpx.AsyncClient:
        headers = {}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        timeout = httpx.Timeout(self.settings.request_timeout_s, connect=30.0)
        if self._app is not None:
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self._app),
                base_url="http://in-process",
                headers=headers,
                timeout=timeout,
            )
        return httpx.AsyncClient(base_url=self.settings.base_url, headers=headers, timeout=timeout)

    async def _server_info(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        if not self.settings.preflight:
            return None
        try:
            response = await client.get("/v1/models", timeout=30.0)
            response.raise_for_status()
            info: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            where = "in-process app" if self._app is not None else self.settings.base_url
            raise EvalError(f"server at {where} is not reachable: {exc}") from exc
        return info

    def _write_meta(self, server: dict[str, Any] | None, *, selected: int) -> None:
        previous: dict[str, Any] = {}
        if self.meta_path.exists():
            previous = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if previous.get("config_hash") != self.config.config_hash():
                raise EvalError(f"{self.meta_path} belongs to a different config")
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        dump_json(
            self.meta_path,
            {
                "config_hash": self.config.config_hash(),
                "config": self.config.model_dump(mode="json"),
                "created_at": previous.get("created_at", now),
                "updated_at": now,
                "settings": self.settings.model_dump(mode="json", exclude={"api_key"}),
                "selected_problems": selected,
                "server": server if server is not None else previous.get("server"),
            },
        )

    def _record(
        self, problem: Problem, index: int, result: ChatResult, grade: Grade
    ) -> SampleRecord:
        thinking, answer_tokens, estimated = split_tokens(result)
        keep = self.settings.store_text
        return SampleRecord(
            problem_id=problem.id,
            sample_index=index,
            gold=problem.answer,
            level=problem.level,
            subject=problem.subject,
            answer=grade.extracted,
            correct=grade.verdict,
            alt_correct=grade.alt_verdict,
            grader_timed_out=grade.timed_out,
            latency_s=result.latency_s,
            ttft_s=result.ttft_s,
            thinking_tokens=thinking,
            answer_tokens=answer_tokens,
            tokens_estimated=estimated,
            finish_reason=result.finish_reason,
            model=result.model,
            tts=result.tts,
            content=result.content if keep else None,
            reasoning_content=result.reasoning_content if keep else None,
            token_confidence=(
                [round(c, 4) for c in result.token_confidence]
                if result.token_confidence is not None
                else None
            ),
            confidence_source=result.confidence_source,
        )

    @staticmethod
    def _failed(problem: Problem, index: int, error: str) -> SampleRecord:
        return SampleRecord(
            problem_id=problem.id,
            sample_index=index,
            gold=problem.answer,
            level=problem.level,
            subject=problem.subject,
            error=error,
        )

    async def _sample(self, chat: ChatClient, problem: Problem, index: int) -> SampleRecord:
        body = self.config.request_body(problem, sample_index=index)
        try:
            result = await chat.complete(body, stream=self.config.stream)
        except ChatRequestError as exc:
            return self._failed(problem, index, str(exc))
        try:
            grade = await self._grader.grade(result.content, problem.answer)
        except Exception as exc:  # a grader failure must not end the run; retried on resume
            log.warning("grading %s/%d failed: %r", problem.id, index, exc)
            return self._failed(problem, index, f"grader: {type(exc).__name__}: {exc}")
        return self._record(problem, index, result, grade)

    async def _append(self, writer: ThreadPoolExecutor, record: SampleRecord) -> None:
        # One writer thread keeps appends ordered; the shield lets a finished sample reach the
        # file even when the run is cancelled (Ctrl-C) while its write is queued.
        future = writer.submit(self._store.append, [record])
        await asyncio.shield(asyncio.wrap_future(future))

    async def run(self, problems: Sequence[Problem], *, show_progress: bool = True) -> RunResult:
        """Request every unfinished (problem, sample) pair and return all selected records."""
        order = [(p.id, i) for p in problems for i in range(self.config.n)]
        existing = {r.key: r for r in self._store.load()}
        reused = [existing[k] for k in order if k in existing and existing[k].error is None]
        done = {r.key for r in reused}
        todo = [(p, i) for p in problems for i in range(self.config.n) if (p.id, i) not in done]
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-writer")
        try:
            async with self._http_client() as client:
                self._write_meta(await self._server_info(client), selected=len(problems))
                with _progress(self._console, enabled=show_progress) as progress:
                    await self._request_all(
                        ChatClient(client), writer, progress, todo=todo, reused=reused
                    )
        finally:
            # Flush the records already produced, also on cancellation (a few fsyncs at most).
            await asyncio.shield(asyncio.to_thread(writer.shutdown, wait=True))
        final = {r.key: r for r in self._store.load()}
        return RunResult(
            records=[final[k] for k in order if k in final],
            run_path=self.run_path,
            meta_path=self.meta_path,
            reused=len(reused),
            completed=len(todo),
        )

    async def _request_all(
        self,
        chat: ChatClient,
        writer: ThreadPoolExecutor,
        progress: Progress,
        *,
        todo: Sequence[tuple[Problem, int]],
        reused: Sequence[SampleRecord],
    ) -> None:
        semaphore = asyncio.Semaphore(self.settings.concurrency)
        graded, correct, errors = len(reused), sum(r.correct for r in reused), 0
        task_id = progress.add_task(
            f"{dataset_label(self.config.dataset)} {self.config.config_hash()[:8]}",
            total=len(reused) + len(todo),
            completed=len(reused),
            graded=graded,
            correct=correct,
            errors=errors,
        )

        async def one(problem: Problem, index: int) -> None:
            nonlocal graded, correct, errors
            async with semaphore:
                record = await self._sample(chat, problem, index)
            await self._append(writer, record)
            if record.error is None:
                graded += 1
                correct += int(record.correct)
            else:
                errors += 1
            progress.update(task_id, advance=1, graded=graded, correct=correct, errors=errors)

        async with asyncio.TaskGroup() as group:
            for problem, index in todo:
                group.create_task(one(problem, index))
