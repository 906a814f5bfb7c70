"""DeepConf offline: replay a sample bank through the live service's request code.

A bank is an eval run recorded with logprobs (``SampleRecord.token_confidence``): N samples per
problem. Each problem is replayed as one request of N parallel branches through the service's
own :class:`~tts_orchestrator.request.branches.VotingPresenter` and
:class:`~tts_orchestrator.request.confidence.BranchConfidence` (the objects the orchestrator
builds for a live request): every recorded token becomes one stream chunk carrying its
confidence (its sampled logprob, for a bank without top logprobs), the last one the sample's
text and finish reason. The presenter extracts each answer, clusters it (with the service's
equivalence check), warms DeepConf's gate up, prunes and stops exactly as it does live; a
branch it prunes or aborts gets no further chunk, as the orchestrator aborts its stream.

Timing is the one simplification: running branches decode in lockstep, one token per step
(equal decode rates; a real pool's rates differ a little). A pool has ``slots`` sequences at once
(llama.cpp's ``n_parallel``): branches past them wait in the engine's queue, in index order, and
start as slots free up, so the branches that finish first are the ones the gate warms up on, and
a branch still queued when the request stops costs nothing. Under ``warmup_first`` the branches
past the warm-up join the queue only when the presenter starts them (`take_starts`), as the
orchestrator does. Only what a live service could know
steers a decision (token confidences, answers as they finish); ``correct`` (the grader's verdict
of the winning branch's sample) only grades.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.records import RunStore
from tts_orchestrator.actors.jobs import BranchChunk
from tts_orchestrator.backends.base import CompletionChunk
from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.request.branches import VotingPresenter
from tts_orchestrator.request.confidence import BranchConfidence
from verifiers.confidence import ConfidenceConfig, ConfidenceSource
from verifiers.families import ModelFamily, get_family
from verifiers.voting import EquivalenceFn

__all__ = [
    "BankSample",
    "Method",
    "Outcome",
    "Summary",
    "deepconf_methods",
    "evaluate",
    "load_bank",
    "replay",
    "replay_bank",
    "summarize",
]


@dataclass(frozen=True)
class BankSample:
    """One recorded sample: its text, per-token confidence and the grader's verdict."""

    text: str
    correct: bool
    confidence: tuple[float, ...]
    source: ConfidenceSource
    finish_reason: str = "stop"

    @property
    def tokens(self) -> int:
        return len(self.confidence)


@dataclass(frozen=True)
class Method:
    """A request shape to replay: the ``tts`` options and the DeepConf settings."""

    name: str
    tts: TtsOptions
    confidence: ConfidenceConfig | None = None
    #: The service's majority also stops once the vote is decided; False hears every branch.
    safe_lead: bool = False


@dataclass(frozen=True)
class Outcome:
    correct: bool
    tokens: int
    pruned: int = 0
    stopped: bool = False
    #: Decode steps until the request ended (its latency in token times, equal rates).
    steps: int = 0


def load_bank(path: Path) -> dict[str, list[BankSample]]:
    """Problems with every sample's confidence recorded, samples in index order."""
    bank: dict[str, list[BankSample]] = {}
    for r in sorted(RunStore(path).load(), key=lambda r: (r.problem_id, r.sample_index)):
        if r.error is not None or not r.token_confidence or r.confidence_source is None:
            continue
        bank.setdefault(r.problem_id, []).append(
            BankSample(
                text=(r.reasoning_content or "") + (r.content or ""),
                correct=r.correct,
                confidence=tuple(r.token_confidence),
                source=ConfidenceSource(r.confidence_source),
                finish_reason=r.finish_reason or "stop",
            )
        )
    return bank


def _chunk(s: BankSample, step: int) -> CompletionChunk:
    last = step == s.tokens - 1
    value = s.confidence[step : step + 1]
    top_k = s.source is ConfidenceSource.TOP_K
    return CompletionChunk(
        text=s.text if last else "",
        n_tokens=1,
        token_confidence=value if top_k else None,
        token_logprobs=None if top_k else value,
        finish_reason=s.finish_reason if last else None,
    )


async def replay(
    samples: Sequence[BankSample],
    method: Method,
    *,
    equivalent: EquivalenceFn,
    family: ModelFamily,
    slots: int | None = None,
) -> Outcome:
    """One request of ``len(samples)`` branches through the live presenter on a pool of
    ``slots`` sequences (None: every branch at once); see the module docstring."""
    n = len(samples)
    c = method.confidence
    confidence = (
        BranchConfidence(c, n, prune=method.tts.early_stop == "confidence")
        if c is not None
        else None
    )
    presenter = VotingPresenter(
        [None] * n,
        family=family,
        tts=method.tts,
        equivalent=equivalent,
        confidence=confidence,
        safe_lead=method.safe_lead,
    )
    branches = presenter.branches
    pruned = steps = 0
    spent = [0] * n  # tokens streamed per branch
    while not presenter.all_done:
        # The engine serves its queue in order: the first `slots` unfinished branches that
        # were started (under `warmup_first` the others wait for the warm-up) run.
        started = [i for i in range(n) if not branches[i].done and i not in presenter.waiting]
        if not started:  # every started branch ended: the waiting ones start now or never
            presenter.take_starts(force=True)
            continue
        steps += 1
        for i in started[: slots or n]:
            if branches[i].done:  # stopped by an earlier branch of this step
                continue
            await presenter.observe(BranchChunk(branch=i, chunk=_chunk(samples[i], spent[i])))
            spent[i] += 1
            pruned += len(presenter.take_prunes())  # the orchestrator aborts these streams
            presenter.take_aborts()  # ... and these (an early stop): they get no more chunks
            presenter.take_starts()  # ... and starts these: they join the engine's queue
    await presenter.finish()
    vote = presenter.vote_detail() or {}
    winner = vote.get("winner_branch")
    return Outcome(
        correct=winner is not None and samples[winner].correct,
        tokens=presenter.tokens_detail()["generated"],
        pruned=pruned,
        stopped=presenter.consensus.decision is not None,
        steps=steps,
    )


@dataclass(frozen=True)
class Summary:
    name: str
    problems: int
    accuracy: float
    tokens: int
    pruned: int = 0
    stopped: int = 0
    steps: int = 0


async def replay_bank(
    bank: dict[str, list[BankSample]],
    method: Method,
    *,
    equivalent: EquivalenceFn,
    family: ModelFamily | None = None,
    slots: int | None = None,
) -> dict[str, Outcome]:
    """One method over every problem of the bank: each problem's outcome."""
    family = family or get_family("generic")
    return {
        pid: await replay(s, method, equivalent=equivalent, family=family, slots=slots)
        for pid, s in bank.items()
    }


def summarize(name: str, outcomes: Iterable[Outcome]) -> Summary:
    out = list(outcomes)
    return Summary(
        name=name,
        problems=len(out),
        accuracy=sum(o.correct for o in out) / max(1, len(out)),
        tokens=sum(o.tokens for o in out),
        pruned=sum(o.pruned for o in out),
        stopped=sum(o.stopped for o in out),
        steps=sum(o.steps for o in out),
    )


async def evaluate(
    bank: dict[str, list[BankSample]],
    methods: Sequence[Method],
    *,
    equivalent: EquivalenceFn,
    family: ModelFamily | None = None,
    slots: int | None = None,
) -> list[Summary]:
    """Every method over every problem of the bank, one summary per method."""
    out = []
    for m in methods:
        each = await replay_bank(bank, m, equivalent=equivalent, family=family, slots=slots)
        out.append(summarize(m.name, each.values()))
    return out


def deepconf_methods(config: ConfidenceConfig, *, n: int) -> list[Method]:
    """The benchmark's rows: majority@N (every branch to its end), the service's majority with
    its decided-vote stop, the confidence vote over every branch, and DeepConf online."""
    return [
        Method("majority@N", TtsOptions(n_branches=n)),
        Method("majority, stop once decided", TtsOptions(n_branches=n), safe_lead=True),
        Method(
            "confidence-weighted@N",
            TtsOptions(n_branches=n, aggregation="confidence"),
            confidence=config,
        ),
        Method(
            "confidence early stop",
            TtsOptions(n_branches=n, aggregation="confidence", early_stop="confidence"),
            confidence=config,
        ),
    ]
