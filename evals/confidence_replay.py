"""DeepConf offline: replay a sample bank with per-token confidence through the service's code.

A bank is an eval run recorded with logprobs (``SampleRecord.token_confidence``): N samples per
problem. For each problem this replays

* **majority@N**: every sample runs to its end; a majority vote;
* **confidence@N**: every sample runs to its end; the confidence vote (top-η, weighted);
* **confidence early stop**: the N samples run as parallel branches that each decode one token
  per step (equal decode rates: a simplification; a real pool's rates differ a little), fed
  token by token into the service's :class:`ConfidenceTracker`; branches that finish warm up
  the :class:`ConfidenceGate`, which then prunes running branches below its threshold; the
  :class:`ConfidenceConsensus` rule stops the rest once the weighted leader holds τ.

Only what a live service could know steers a decision (token confidences, answers as they
finish); ``correct`` (the grader's verdict of the winning cluster's first answer) only grades.
Clustering is by normalised answer text (the service also asks math-verify; on these short
final answers normalisation is what decides almost every pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.records import RunStore
from verifiers.confidence import (
    ConfidenceConfig,
    ConfidenceConsensus,
    ConfidenceGate,
    ConfidenceSource,
    ConfidenceTracker,
)
from verifiers.voting import Aggregation, AnswerClusterer, BranchAnswer


@dataclass(frozen=True)
class BankSample:
    answer: str | None
    correct: bool
    confidence: tuple[float, ...]
    source: ConfidenceSource

    @property
    def tokens(self) -> int:
        return len(self.confidence)


@dataclass(frozen=True)
class Outcome:
    correct: bool
    tokens: int
    pruned: int = 0
    stopped: bool = False


def load_bank(path: Path) -> dict[str, list[BankSample]]:
    """Problems with every sample's confidence recorded, samples in index order."""
    bank: dict[str, list[BankSample]] = {}
    for r in sorted(RunStore(path).load(), key=lambda r: (r.problem_id, r.sample_index)):
        if r.error is not None or not r.token_confidence or r.confidence_source is None:
            continue
        bank.setdefault(r.problem_id, []).append(
            BankSample(
                answer=r.answer,
                correct=r.correct,
                confidence=tuple(r.token_confidence),
                source=ConfidenceSource(r.confidence_source),
            )
        )
    return bank


async def _never(a: str, b: str) -> bool:
    return False


def _tracker(s: BankSample, config: ConfidenceConfig) -> ConfidenceTracker:
    return ConfidenceTracker(window=config.window, tail=config.tail, source=s.source)


async def _vote(
    clusterer: AnswerClusterer,
    samples: Sequence[BankSample],
    aggregation: Aggregation,
    keep: float,
) -> bool:
    result = clusterer.vote(aggregation, keep=keep)
    if result.winner_index is None:
        return False
    return samples[int(result.clusters[result.winner_index].branch_ids[0])].correct


async def full_vote(
    samples: Sequence[BankSample], config: ConfidenceConfig, aggregation: Aggregation
) -> Outcome:
    """Every sample to its end, then one vote (finish order: shortest first)."""
    clusterer = AnswerClusterer(_never)
    for i in sorted(range(len(samples)), key=lambda i: (samples[i].tokens, i)):
        s = samples[i]
        tracker = _tracker(s, config)
        tracker.extend(s.confidence)
        summary = tracker.summary()
        weight = summary.weight(config.measure) if summary is not None else None
        await clusterer.add(
            BranchAnswer(
                branch_id=str(i), answer=s.answer, finished_at=float(s.tokens), confidence=weight
            )
        )
    correct = await _vote(clusterer, samples, aggregation, config.keep)
    return Outcome(correct=correct, tokens=sum(s.tokens for s in samples))


async def early_stop(
    samples: Sequence[BankSample], config: ConfidenceConfig, aggregation: Aggregation
) -> Outcome:
    """DeepConf-online over parallel branches in lockstep (see the module docstring)."""
    n = len(samples)
    trackers = [_tracker(s, config) for s in samples]
    gate = ConfidenceGate(config)
    rule = ConfidenceConsensus(warmup=config.warmup, tau=config.tau)
    clusterer = AnswerClusterer(_never)
    running = set(range(n))
    spent = [0] * n
    pruned, voters, stopped = 0, n, False
    step = 0
    while running and not stopped:
        step += 1
        for i in sorted(running):
            trackers[i].extend(samples[i].confidence[step - 1 : step])
            spent[i] = step
        for i in sorted(i for i in running if samples[i].tokens == step):
            running.discard(i)
            summary = trackers[i].summary()
            gate.finished(summary)
            weight = summary.weight(config.measure) if summary is not None else None
            await clusterer.add(
                BranchAnswer(
                    branch_id=str(i),
                    answer=samples[i].answer,
                    finished_at=float(step),
                    confidence=weight,
                )
            )
            state = clusterer.state(voters)
            if state.remaining and rule.should_stop(state).stop:
                stopped = True
                break
        if stopped:
            break
        for i in sorted(running):
            if gate.prune(trackers[i]) is not None:
                running.discard(i)
                pruned += 1
                voters -= 1
    correct = await _vote(clusterer, samples, aggregation, config.keep)
    return Outcome(correct=correct, tokens=sum(spent), pruned=pruned, stopped=stopped)


@dataclass(frozen=True)
class Summary:
    name: str
    problems: int
    accuracy: float
    tokens: int
    pruned: int = 0
    stopped: int = 0


async def evaluate(
    bank: dict[str, list[BankSample]],
    config: ConfidenceConfig,
    *,
    variants: Sequence[tuple[str, ConfidenceConfig]] = (),
) -> list[Summary]:
    """majority@N, confidence@N and confidence early stop (confidence vote) over the bank, then
    the last two again for each named variant of the settings."""
    runs = {"majority@N": [await full_vote(s, config, Aggregation.MAJORITY) for s in bank.values()]}
    for suffix, c in [("", config), *((f" ({name})", v) for name, v in variants)]:
        runs[f"confidence-weighted@N{suffix}"] = [
            await full_vote(s, c, Aggregation.CONFIDENCE) for s in bank.values()
        ]
        runs[f"confidence early stop{suffix}"] = [
            await early_stop(s, c, Aggregation.CONFIDENCE) for s in bank.values()
        ]
    return [
        Summary(
            name=name,
            problems=len(outcomes),
            accuracy=sum(o.correct for o in outcomes) / max(1, len(outcomes)),
            tokens=sum(o.tokens for o in outcomes),
            pruned=sum(o.pruned for o in outcomes),
            stopped=sum(o.stopped for o in outcomes),
        )
        for name, outcomes in runs.items()
    ]
