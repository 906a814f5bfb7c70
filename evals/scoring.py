"""From graded sample records to metric inputs: answer clusters and per-problem outcomes.

Clusters feed maj@k. Every correct answer is equivalent to the reference, so correct samples share
one cluster without further checks; wrong answers are grouped by exact text first and then by the
equivalence checker against each cluster's first member.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from evals.metrics import ProblemOutcome
from evals.records import SampleRecord

__all__ = ["AnswerEquivalence", "build_outcomes", "cluster_answers"]

CORRECT_CLUSTER = 0


class AnswerEquivalence(Protocol):
    """What clustering needs from ``verifiers.equivalence.EquivalenceChecker``."""

    async def equivalent(self, gold: str, pred: str) -> bool: ...


def _normalise(answer: str) -> str:
    return "".join(answer.split())


async def cluster_answers(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    *,
    checker: AnswerEquivalence | None = None,
) -> list[int | None]:
    """A cluster id per sample (None: no answer). Cluster 0 holds the correct answers."""
    clusters: list[int | None] = []
    representatives: list[tuple[int, str]] = []  # (cluster id, first answer) of wrong clusters
    by_text: dict[str, int] = {}
    for answer, ok in zip(answers, correct, strict=True):
        if answer is None or not answer.strip():
            clusters.append(None)
            continue
        if ok:
            clusters.append(CORRECT_CLUSTER)
            continue
        text = _normalise(answer)
        found = by_text.get(text)
        if found is None and checker is not None:
            for cluster_id, representative in representatives:
                if await checker.equivalent(representative, answer):
                    found = cluster_id
                    break
        if found is None:
            found = len(representatives) + 1
            representatives.append((found, answer))
        by_text[text] = found
        clusters.append(found)
    return clusters


async def build_outcomes(
    records: Sequence[SampleRecord], *, checker: AnswerEquivalence | None = None
) -> list[ProblemOutcome]:
    """One outcome per problem, samples ordered by index, in first-seen problem order."""
    grouped: dict[str, list[SampleRecord]] = defaultdict(list)
    for record in records:
        grouped[record.problem_id].append(record)

    async def one(samples: list[SampleRecord]) -> ProblemOutcome:
        samples = sorted(samples, key=lambda r: r.sample_index)
        correct = [r.correct and r.error is None for r in samples]
        clusters = await cluster_answers([r.answer for r in samples], correct, checker=checker)
        first = samples[0]
        return ProblemOutcome(
            problem_id=first.problem_id,
            level=first.level,
            subject=first.subject,
            correct=tuple(correct),
            clusters=tuple(clusters),
            latency_s=tuple(r.latency_s for r in samples),
            ttft_s=tuple(r.ttft_s for r in samples),
            thinking_tokens=tuple(r.thinking_tokens for r in samples),
            answer_tokens=tuple(r.answer_tokens for r in samples),
            errors=sum(r.error is not None for r in samples),
        )

    return list(await asyncio.gather(*(one(samples) for samples in grouped.values())))
