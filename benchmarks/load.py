"""Load: ramp concurrent streaming requests to the knee, then soak below it and watch memory.

The service runs for real (API, private Redis, local Ray, pool actor) on the replay engine at a
realistic per-stream decode rate, streaming real recorded traces (Sky-T1, DeepSeek-R1 distills).
The load generator runs on the same box, so both share its cores.

* **Added latency** of one request = its total time - the ideal time the replay rate allows for
  the tokens it streamed (``completion_tokens / rate``); reported relative to that ideal.
* **Ramp**: closed-loop clients at concurrency 1, 2, 4, ...; each client sends ``--per-client``
  requests back to back. The ramp stops after the first level whose p95 relative added latency
  exceeds ``--threshold`` (10%); the **knee** is the last level within it.
* **Soak**: ``--soak-s`` seconds at a fixed concurrency below the knee, sampling the resident
  memory of the API process (and of its whole process tree: Redis, Ray, pool actor) every
  ``--sample-s`` seconds. Memory is called bounded when a straight line fitted to the second
  half of the API samples projects less than max(10 MB, 5% of its median) of growth over the
  whole soak duration. Plot: ``docs/soak-memory.png``.
* **Every request is counted**: completed (a finish reason, then ``[DONE]``), failed cleanly
  (an OpenAI error body, or an SSE error event then ``[DONE]``), failed otherwise (connection
  broken, malformed stream), or hung (no byte for ``--stall-s`` or over its overall deadline).

Run: ``.venv/bin/python -m benchmarks.load`` (about 25 minutes with the 10-minute soak);
smoke: ``--levels 1,4,16 --per-client 1 --max-tokens 96 --soak-s 30 --no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.common import write_section
from benchmarks.service import REPO, RunningService, replay_pool, start_service
from tts_orchestrator.backends.replay import pseudo_tokens

TRACES = sorted((REPO / "evals" / "data" / "traces").glob("*.jsonl"))
PLOT = REPO / "docs" / "soak-memory.png"


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED_CLEANLY = "failed cleanly"
    FAILED_OTHERWISE = "failed otherwise"
    HUNG = "hung"


@dataclass
class RequestResult:
    outcome: Outcome
    total_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    detail: str = ""
    response_id: str = ""

    def added_ratio(self, rate: float) -> float | None:
        """(total - ideal) / ideal, where ideal = completion_tokens / rate."""
        if self.outcome is not Outcome.COMPLETED or self.completion_tokens == 0:
            return None
        ideal = self.completion_tokens / rate
        return (self.total_s - ideal) / ideal


@dataclass
class LevelStats:
    concurrency: int
    results: list[RequestResult] = field(default_factory=list)
    wall_s: float = 0.0

    def outcomes(self) -> Counter[Outcome]:
        return Counter(r.outcome for r in self.results)

    def p95_added(self, rate: float) -> float:
        ratios = [x for r in self.results if (x := r.added_ratio(rate)) is not None]
        return percentile(ratios, 95)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def knee(levels: list[LevelStats], rate: float, threshold: float) -> int | None:
    """The highest concurrency whose p95 relative added latency (and every lower level's) is
    within `threshold` with no request lost; None if even the first level exceeds it."""
    best = None
    for level in levels:
        clean = level.outcomes()[Outcome.COMPLETED] == len(level.results)
        if not clean or not level.p95_added(rate) <= threshold:
            break
        best = level.concurrency
    return best


def knee_claim(levels: list[LevelStats], rate: float, threshold: float) -> str:
    """The knee only when a level past it failed; else the largest level tried, a lower bound."""
    k = knee(levels, rate, threshold)
    if k is None:
        return "**Knee: below the first level**"
    if levels and k == levels[-1].concurrency:
        return (
            f"**No knee reached**: every level stayed within, up to the largest tried, "
            f"concurrency {k} (a lower bound, not a limit found)"
        )
    return f"**Knee: concurrency {k}**"


def growth_fit(times_s: list[float], values_mb: list[float]) -> tuple[float, float]:
    """(slope MB/min, intercept MB) of a least-squares line over the second half of samples."""
    half = len(times_s) // 2
    t = np.asarray(times_s[half:]) / 60.0
    v = np.asarray(values_mb[half:])
    if len(t) < 2:
        return 0.0, float(v[0]) if len(v) else 0.0
    slope, intercept = np.polyfit(t, v, 1)
    return float(slope), float(intercept)


# -- prompts -------------------------------------------------------------------------------------
def long_problems(min_tokens: int) -> list[str]:
    """Problems every recorded trace of which streams at least `min_tokens` tokens."""
    shortest: dict[str, int] = {}
    for path in TRACES:
        with path.open() as f:
            for line in f:
                row = json.loads(line)
                n = len(pseudo_tokens(row["output"]))
                shortest[row["problem"]] = min(n, shortest.get(row["problem"], n))
    return sorted(p for p, n in shortest.items() if n >= min_tokens)


# -- one request ---------------------------------------------------------------------------------
async def stream_one(
    client: httpx.AsyncClient, url: str, body: dict[str, object], *, deadline_s: float
) -> RequestResult:
    start = time.perf_counter()
    ttft: float | None = None
    tokens, finished, done, error, response_id = 0, False, False, "", ""
    try:
        async with asyncio.timeout(deadline_s):
            async with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    text = (await r.aread()).decode(errors="replace")
                    clean = _is_openai_error(text)
                    outcome = Outcome.FAILED_CLEANLY if clean else Outcome.FAILED_OTHERWISE
                    return RequestResult(
                        outcome, time.perf_counter() - start, detail=f"{r.status_code} {text[:200]}"
                    )
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    if not response_id and line.startswith('data: {"id"'):
                        response_id = str(json.loads(line[6:])["id"])
                    if ttft is None and ('"content"' in line or '"reasoning_content"' in line):
                        ttft = time.perf_counter() - start
                    if line.startswith('data: {"error"'):
                        error = line[6:]
                    elif '"usage"' in line:
                        tokens = int(json.loads(line[6:])["usage"]["completion_tokens"])
                    elif '"finish_reason":"' in line:
                        finished = True
    except (TimeoutError, httpx.TimeoutException) as exc:
        return RequestResult(Outcome.HUNG, time.perf_counter() - start, ttft, detail=repr(exc))
    except httpx.HTTPError as exc:
        return RequestResult(
            Outcome.FAILED_OTHERWISE, time.perf_counter() - start, ttft, detail=repr(exc)
        )
    total = time.perf_counter() - start
    if error and done and _is_openai_error(error):
        return RequestResult(Outcome.FAILED_CLEANLY, total, ttft, tokens, error[:200])
    if finished and done and not error:
        return RequestResult(Outcome.COMPLETED, total, ttft, tokens, response_id=response_id)
    return RequestResult(Outcome.FAILED_OTHERWISE, total, ttft, tokens, "stream ended early")


def _is_openai_error(text: str) -> bool:
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error


@dataclass
class LoadPlan:
    url: str
    rate: float
    max_tokens: int
    problems: list[str]
    stall_s: float
    seed: int = 0

    @property
    def deadline_s(self) -> float:
        return 3 * self.max_tokens / self.rate + 60

    def body(self, rng: random.Random) -> dict[str, object]:
        return {
            "model": "replay",
            "messages": [{"role": "user", "content": rng.choice(self.problems)}],
            "max_tokens": self.max_tokens,
            "seed": rng.randrange(1 << 30),
            "stream": True,
            "stream_options": {"include_usage": True},
        }


def _client(plan: LoadPlan, connections: int) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=10.0, read=plan.stall_s, write=10.0, pool=None)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


async def run_level(plan: LoadPlan, concurrency: int, per_client: int) -> LevelStats:
    stats = LevelStats(concurrency)
    url = f"{plan.url}/v1/chat/completions"
    async with _client(plan, concurrency) as client:

        async def worker(i: int) -> None:
            rng = random.Random(plan.seed * 100_003 + concurrency * 1009 + i)
            for _ in range(per_client):
                stats.results.append(
                    await stream_one(client, url, plan.body(rng), deadline_s=plan.deadline_s)
                )

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        stats.wall_s = time.perf_counter() - start
    return stats


@dataclass
class SoakResult:
    concurrency: int
    results: list[RequestResult]
    times_s: list[float]
    api_mb: list[float]
    tree_mb: list[float]


def _rss_mb(pid: int) -> tuple[float, float]:
    proc = psutil.Process(pid)
    api = proc.memory_info().rss
    tree = api
    for child in proc.children(recursive=True):
        try:
            tree += child.memory_info().rss
        except psutil.Error:
            continue
    return api / 2**20, tree / 2**20


async def run_soak(
    plan: LoadPlan, service: RunningService, *, concurrency: int, soak_s: float, sample_s: float
) -> SoakResult:
    out = SoakResult(concurrency, [], [], [], [])
    url = f"{plan.url}/v1/chat/completions"
    start = time.perf_counter()
    stop_at = start + soak_s

    async def sampler() -> None:
        while True:
            api, tree = await asyncio.to_thread(_rss_mb, service.proc.pid)
            out.times_s.append(time.perf_counter() - start)
            out.api_mb.append(api)
            out.tree_mb.append(tree)
            if time.perf_counter() >= stop_at:
                return
            await asyncio.sleep(sample_s)

    async with _client(plan, concurrency) as client:

        async def worker(i: int) -> None:
            rng = random.Random(plan.seed * 7919 + i)
            while time.perf_counter() < stop_at:
                out.results.append(
                    await stream_one(client, url, plan.body(rng), deadline_s=plan.deadline_s)
                )

        await asyncio.gather(sampler(), *(worker(i) for i in range(concurrency)))
    return out


# -- report --------------------------------------------------------------------------------------
def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:.0f}" if values else "-"


def ramp_table(levels: list[LevelStats], rate: float) -> str:
    rows = [
        "| concurrency | requests | completed | failed cleanly | failed otherwise | hung | "
        "TTFT p50 (ms) | TTFT p95 (ms) | added p50 (ms) | added p95 (ms) | "
        "p95 added / ideal | tokens/s delivered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        done = [r for r in lv.results if r.outcome is Outcome.COMPLETED]
        ttft = [r.ttft_s for r in done if r.ttft_s is not None]
        added = [r.total_s - r.completion_tokens / rate for r in done]
        oc = lv.outcomes()
        tps = sum(r.completion_tokens for r in done) / lv.wall_s if lv.wall_s else 0.0
        rows.append(
            f"| {lv.concurrency} | {len(lv.results)} | {oc[Outcome.COMPLETED]} | "
            f"{oc[Outcome.FAILED_CLEANLY]} | {oc[Outcome.FAILED_OTHERWISE]} | {oc[Outcome.HUNG]} | "
            f"{_ms(ttft, 50)} | {_ms(ttft, 95)} | {_ms(added, 50)} | {_ms(added, 95)} | "
            f"{lv.p95_added(rate):.1%} | {tps:.0f} |"
        )
    return "\n".join(rows)


def plot_soak(soak: SoakResult, slope: float, intercept: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = np.asarray(soak.times_s) / 60
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(minutes, soak.api_mb, label="API process RSS", color="tab:blue")
    half = len(minutes) // 2
    if len(minutes) - half >= 2:
        fit_t = minutes[half:]
        top.plot(
            fit_t,
            slope * fit_t + intercept,
            "--",
            color="tab:red",
            label=f"linear fit, second half: {slope:+.2f} MB/min",
        )
    top.set_ylabel("API RSS (MB)")
    top.set_title(f"Soak at concurrency {soak.concurrency}: {len(soak.results)} streamed requests")
    bottom.plot(minutes, soak.tree_mb, color="tab:gray", label="API + children")
    bottom.set_ylabel("API + Redis + Ray (MB)")
    bottom.set_xlabel("minutes into the soak")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak_section(soak: SoakResult, soak_s: float) -> tuple[str, float, float, bool]:
    slope, intercept = growth_fit(soak.times_s, soak.api_mb)
    median = statistics.median(soak.api_mb)
    projected = slope * soak_s / 60
    bounded = abs(projected) <= max(10.0, 0.05 * median)
    oc = Counter(r.outcome for r in soak.results)
    text = (
        f"| soak | value |\n|---|---|\n"
        f"| concurrency | {soak.concurrency} |\n"
        f"| duration | {soak_s:.0f} s, {len(soak.times_s)} memory samples |\n"
        f"| requests | {len(soak.results)}: {oc[Outcome.COMPLETED]} completed, "
        f"{oc[Outcome.FAILED_CLEANLY]} failed cleanly, {oc[Outcome.FAILED_OTHERWISE]} failed "
        f"otherwise, {oc[Outcome.HUNG]} hung |\n"
        f"| API RSS first / median / max / last (MB) | {soak.api_mb[0]:.0f} / {median:.0f} / "
        f"{max(soak.api_mb):.0f} / {soak.api_mb[-1]:.0f} |\n"
        f"| API + children RSS first / last (MB) | {soak.tree_mb[0]:.0f} / "
        f"{soak.tree_mb[-1]:.0f} |\n"
        f"| growth, second half (linear fit) | {slope:+.2f} MB/min → {projected:+.1f} MB over "
        f"the soak |\n"
        f"| bounded (projected growth ≤ max(10 MB, 5% of median)) | {'yes' if bounded else 'NO'} |"
    )
    return text, slope, intercept, bounded


# -- main ----------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, service: RunningService) -> str:
    problems = long_problems(args.max_tokens)
    plan = LoadPlan(
        url=service.url,
        rate=args.rate,
        max_tokens=args.max_tokens,
        problems=problems,
        stall_s=args.stall_s,
    )
    await run_level(plan, 2, 1)  # warm-up: template, Ray object paths, Redis connections
    levels: list[LevelStats] = []
    for c in args.levels:
        level = await run_level(plan, c, args.per_client)
        levels.append(level)
        print(ramp_table(levels[-1:], args.rate).splitlines()[-1], flush=True)
        if level.p95_added(args.rate) > args.threshold or level.outcomes()[Outcome.HUNG]:
            break
    k = knee(levels, args.rate, args.threshold)
    soak_c = args.soak_concurrency or max(1, (k or 1) // 2)
    soak = await run_soak(
        plan, service, concurrency=soak_c, soak_s=args.soak_s, sample_s=args.sample_s
    )
    soak_text, slope, intercept, _ = soak_section(soak, args.soak_s)
    plot_soak(soak, slope, intercept, args.plot)
    all_results = [r for lv in levels for r in lv.results] + soak.results
    totals = Counter(r.outcome for r in all_results)
    knee_text = knee_claim(levels, args.rate, args.threshold)
    plot_rel = (
        args.plot.relative_to(REPO / "docs")
        if args.plot.is_relative_to(REPO / "docs")
        else args.plot
    )
    return (
        f"Replay engine at {args.rate:g} tokens/s per stream over {len(problems)} real problems "
        f"(Sky-T1 and DeepSeek-R1-distill traces at least {args.max_tokens} tokens long); every "
        f"request is a streamed chat completion of exactly `max_tokens={args.max_tokens}` tokens "
        f"(ideal {args.max_tokens / args.rate:.1f} s). Closed-loop clients, {args.per_client} "
        f"requests each per level, on the same 2-core box as the service. Added latency = total "
        f"- tokens / rate; the knee is the highest concurrency with p95 added ≤ "
        f"{args.threshold:.0%} of the ideal and no request lost.\n\n"
        f"{ramp_table(levels, args.rate)}\n\n{knee_text}.\n\n"
        f"Soak at concurrency {soak_c}:\n\n{soak_text}\n\n"
        f"![API memory during the soak]({plot_rel})\n\n"
        f"All requests of this run: {len(all_results)} — "
        + ", ".join(f"{totals[o]} {o.value}" for o in Outcome)
        + "."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=40.0, help="replay tokens/s per stream")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256],
    )
    ap.add_argument("--per-client", type=int, default=3, help="requests per client per level")
    ap.add_argument("--threshold", type=float, default=0.10, help="p95 added / ideal at the knee")
    ap.add_argument("--soak-s", type=float, default=600.0)
    ap.add_argument("--soak-concurrency", type=int, default=0, help="default: half the knee")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--stall-s", type=float, default=30.0, help="no byte this long = hung")
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument("--no-write", action="store_true", help="print only")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "server": {"max_tokens_cap": max(args.max_tokens, 4096)},
            "pools": [replay_pool(traces=[str(p) for p in TRACES], tokens_per_s=args.rate)],
            "ray": {"num_cpus": 2},
        }
        service = start_service(config, Path(tmp))
        try:
            body = asyncio.run(run(args, service))
        finally:
            service.stop()
    print(body)
    if not args.no_write:
        levels = ",".join(str(c) for c in args.levels)
        write_section(
            "Load: knee, soak memory, request outcomes (issue 7)",
            body,
            f"python -m benchmarks.load --rate {args.rate:g} --max-tokens {args.max_tokens} "
            f"--levels {levels} --per-client {args.per_client} --soak-s {args.soak_s:g}",
        )


if __name__ == "__main__":
    main()
