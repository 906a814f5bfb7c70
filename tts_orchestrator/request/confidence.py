"""One request's DeepConf bookkeeping: a running confidence per branch, the pruning gate.

Wires the pure pieces of `verifiers.confidence` to a request's branches: every chunk's
per-token confidence (or, from an engine that sends no top logprobs, its sampled logprobs) is
folded into that branch's :class:`ConfidenceTracker`; finished branches warm the
:class:`ConfidenceGate` up; a running branch that falls below the gate's threshold is pruned
(with ``prune``), and under ``ConfidenceVote.THRESHOLD`` a finished branch below it is left out
of the vote.
"""

from __future__ import annotations

from typing import Any

from tts_orchestrator.backends.base import CompletionChunk
from verifiers.confidence import (
    ConfidenceConfig,
    ConfidenceGate,
    ConfidenceSource,
    ConfidenceSummary,
    ConfidenceTracker,
    ConfidenceVote,
)


class BranchConfidence:
    """The confidence of a request's branches and (with ``prune``) DeepConf-online's gate."""

    def __init__(self, config: ConfidenceConfig, n_branches: int, *, prune: bool) -> None:
        self.config = config
        self.prune = prune
        #: The warm-up threshold: pruning (``prune``) and the threshold vote both read it.
        self.gate = ConfidenceGate(config)
        self._trackers: list[ConfidenceTracker | None] = [None] * n_branches
        self._finished: list[int] = []

    def feed(self, branch: int, chunk: CompletionChunk) -> None:
        if chunk.token_confidence:
            values, source = chunk.token_confidence, ConfidenceSource.TOP_K
        elif chunk.token_logprobs:
            values, source = chunk.token_logprobs, ConfidenceSource.SAMPLED
        else:
            return
        tracker = self._trackers[branch]
        if tracker is None:
            tracker = self._trackers[branch] = ConfidenceTracker(
                window=self.config.window, tail=self.config.tail, source=source
            )
        if tracker.source is source:  # one measure per branch: never mix the two
            tracker.extend(values)

    def summary(self, branch: int) -> ConfidenceSummary | None:
        tracker = self._trackers[branch]
        return tracker.summary() if tracker is not None else None

    def weight(self, branch: int) -> float | None:
        """The branch's vote weight (its confidence by the configured measure)."""
        s = self.summary(branch)
        return s.weight(self.config.measure) if s is not None else None

    @property
    def threshold(self) -> float | None:
        return self.gate.threshold

    def finished(self, branch: int) -> None:
        """A branch finished with an answer: it may warm the gate up."""
        self._finished.append(branch)
        self.gate.finished(self.summary(branch))

    def left_out(self) -> list[int]:
        """Finished branches the vote does not hear under ``ConfidenceVote.THRESHOLD``: those
        whose lowest group confidence is below the threshold (none before it exists)."""
        if self.config.vote is not ConfidenceVote.THRESHOLD:
            return []
        return [
            i
            for i in self._finished
            if (s := self.summary(i)) is not None and not self.gate.admits(s)
        ]

    def prune_reason(self, branch: int) -> str | None:
        """Why this running branch should be pruned now (None: keep it)."""
        tracker = self._trackers[branch]
        if not self.prune or tracker is None:
            return None
        low = self.gate.prune(tracker)
        if low is None:
            return None
        return (
            f"pruned: group confidence {low:.3f} < threshold {self.gate.threshold:.3f} "
            f"(last {self.config.window} tokens)"
        )

    def detail(self, branch: int) -> dict[str, Any] | None:
        s = self.summary(branch)
        if s is None:
            return None
        return {
            "source": s.source.value,
            "tokens": s.tokens,
            "mean": round(s.mean, 6),
            "lowest_group": round(s.lowest_group, 6),
            "tail": round(s.tail, 6),
            "weight": round(s.weight(self.config.measure), 6),
        }

    def gate_detail(self) -> dict[str, Any]:
        out: dict[str, Any] = self.config.model_dump(mode="json")
        if self.prune or self.config.vote is ConfidenceVote.THRESHOLD:
            threshold = self.gate.threshold
            out["threshold"] = None if threshold is None else round(threshold, 6)
            out["warmup_lowest_groups"] = [round(x, 6) for x in self.gate.warmup]
        return out
