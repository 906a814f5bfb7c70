"""Choosing DeepConf's settings on a sample bank by a stated protocol: 2-fold cross-validation.

* **Grid.** :data:`GRID` (warm-up branches, the vote's η ``keep``, the threshold's η
  ``prune_keep``, τ, voting measure); the vote filter and the branch order are fixed at the
  service's defaults (:data:`FIXED` says why), the window and tail stay the caller's (a share of
  the bank's sample length). Every grid point
  is replayed once on every problem through the live request code
  (`evals.confidence_replay`), as confidence early stop and as the confidence-weighted vote
  without early stop.
* **Rule** (:func:`choose`), on a selection set of problems: among the grid points whose early
  stop keeps accuracy ≥ majority@N − ``slack_pt`` and whose weighted vote is ≥ majority@N, the
  one with the fewest early-stop tokens (ties: the earlier grid point; the grid lists the
  service's defaults first). None fits: no selection.
* **Folds** (:func:`folds`): problems sorted by id; fold 1 selects on the even positions and
  reports on the odd ones, fold 2 the reverse. The cross-validated estimate pools the two
  held-out halves, so every problem is reported once, by a setting chosen without it.
* **Stable**: both folds choose the same grid point; only then is that point a candidate
  default (the caller still checks the pooled estimate against its target).

Grades (``Outcome.correct``) select on the selection half only; they never steer a replayed
request.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from evals.confidence_replay import (
    BankSample,
    Method,
    Outcome,
    Summary,
    replay_bank,
    summarize,
)
from tts_orchestrator.protocol import TtsOptions
from verifiers.confidence import ConfidenceConfig, ConfidenceMeasure, ConfidenceVote
from verifiers.voting import EquivalenceFn

__all__ = [
    "FIXED",
    "GRID",
    "FoldResult",
    "GridRun",
    "choose",
    "cross_validate",
    "folds",
    "grid_configs",
    "held_out_rows",
    "run_grid",
    "vote_key",
]

Bank = dict[str, list[BankSample]]

#: The settings tried; the first value of each is the service's default (`ConfidenceConfig`).
GRID: dict[str, tuple[object, ...]] = {
    "warmup": (3, 2, 4),
    "keep": (0.9, 0.5, 0.1),
    "prune_keep": (0.1, 0.5, 0.9),
    "tau": (0.95, 0.9, 0.8),
    "measure": (ConfidenceMeasure.LOWEST_GROUP, ConfidenceMeasure.TAIL),
    "vote": (ConfidenceVote.MOST_CONFIDENT,),
    "warmup_first": (True,),
}

#: Settings the grid no longer varies, and why: adding ``prune_keep`` (×3) would have tripled
#: the run; these two were rarely or never chosen when the grid had them (one η, before the
#: split; 20 folds of 10 random 2-fold splits on the GSM8K bank).
FIXED: dict[str, str] = {
    "vote": "threshold was chosen in 3 of 20 folds",
    "warmup_first": "false was chosen in 0 of 20 folds",
}

MAJORITY, WEIGHTED, STOP = "majority@N", "confidence-weighted@N", "confidence early stop"


def grid_configs(base: ConfidenceConfig) -> list[ConfidenceConfig]:
    return [
        base.model_copy(update=dict(zip(GRID, values, strict=True)))
        for values in itertools.product(*GRID.values())
    ]


def vote_key(c: ConfidenceConfig) -> ConfidenceConfig:
    """The settings the weighted vote without early stop depends on (the rest reset): the top
    share ``keep``, or under the threshold vote the warm-up and its ``prune_keep`` quantile."""
    defaults = ConfidenceConfig()
    reset: dict[str, object] = {"tau": defaults.tau, "warmup_first": defaults.warmup_first}
    if c.vote is ConfidenceVote.MOST_CONFIDENT:
        reset |= {"warmup": defaults.warmup, "prune_keep": defaults.prune_keep}
    else:
        reset["keep"] = defaults.keep
    return c.model_copy(update=reset)


@dataclass(frozen=True)
class GridRun:
    """Per-problem outcomes of majority@N and of every grid point (early stop, weighted)."""

    configs: list[ConfidenceConfig]
    majority: dict[str, Outcome]
    stop: list[dict[str, Outcome]]
    weighted: list[dict[str, Outcome]]

    def rows(self, index: int, ids: Sequence[str]) -> list[Summary]:
        return [
            summarize(MAJORITY, (self.majority[i] for i in ids)),
            summarize(WEIGHTED, (self.weighted[index][i] for i in ids)),
            summarize(STOP, (self.stop[index][i] for i in ids)),
        ]


async def run_grid(
    bank: Bank,
    configs: Sequence[ConfidenceConfig],
    *,
    n: int,
    slots: int | None,
    equivalent: EquivalenceFn,
) -> GridRun:
    """Replay majority@N and every config (early stop; weighted vote) on every problem."""
    stop_tts = TtsOptions(n_branches=n, aggregation="confidence", early_stop="confidence")
    vote_tts = TtsOptions(n_branches=n, aggregation="confidence")

    async def each(method: Method) -> dict[str, Outcome]:
        return await replay_bank(bank, method, equivalent=equivalent, slots=slots)

    majority = await each(Method(MAJORITY, TtsOptions(n_branches=n)))
    votes: dict[ConfidenceConfig, dict[str, Outcome]] = {}
    stop, weighted = [], []
    for c in configs:
        stop.append(await each(Method(STOP, stop_tts, confidence=c)))
        key = vote_key(c)
        if key not in votes:
            votes[key] = await each(Method(WEIGHTED, vote_tts, confidence=key))
        weighted.append(votes[key])
    return GridRun(list(configs), majority, stop, weighted)


def choose(run: GridRun, ids: Sequence[str], *, slack_pt: float) -> int | None:
    """The rule of the module docstring on the problems ``ids``: a grid index, or None."""
    fits = []
    for index in range(len(run.configs)):
        base, weighted, stop = run.rows(index, ids)
        if (
            stop.accuracy >= base.accuracy - slack_pt / 100 - 1e-9
            and weighted.accuracy >= base.accuracy - 1e-9
        ):
            fits.append((stop.tokens, index))
    return min(fits)[1] if fits else None


def folds(ids: Sequence[str], *, seed: int | None = None) -> list[tuple[list[str], list[str]]]:
    """(selection, held-out) per fold: even positions of the sorted ids, then odd ones (with
    ``seed``: of the ids shuffled by it instead, for a repeated cross-validation)."""
    keys = sorted(ids)
    if seed is not None:
        random.Random(seed).shuffle(keys)
    even, odd = keys[0::2], keys[1::2]
    return [(even, odd), (odd, even)]


@dataclass(frozen=True)
class FoldResult:
    selected_on: list[str]
    held_out: list[str]
    chosen: int | None


def cross_validate(run: GridRun, *, slack_pt: float, seed: int | None = None) -> list[FoldResult]:
    return [
        FoldResult(selection, held, choose(run, selection, slack_pt=slack_pt))
        for selection, held in folds(list(run.majority), seed=seed)
    ]


def held_out_rows(
    run: GridRun, results: Sequence[FoldResult], *, fallback: int = 0
) -> list[Summary]:
    """majority@N, weighted vote and early stop pooled over every fold's held-out problems,
    each reported with its own fold's choice (``fallback``, the grid's first point — the
    service's defaults — where a fold chose nothing)."""
    outcomes: dict[str, list[Outcome]] = {MAJORITY: [], WEIGHTED: [], STOP: []}
    for r in results:
        index = r.chosen if r.chosen is not None else fallback
        for i in r.held_out:
            outcomes[MAJORITY].append(run.majority[i])
            outcomes[WEIGHTED].append(run.weighted[index][i])
            outcomes[STOP].append(run.stop[index][i])
    return [summarize(name, each) for name, each in outcomes.items()]
