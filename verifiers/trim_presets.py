"""Per-family TrimR presets: the judge bar, the cut granularity and the rule thresholds.

A preset is what a user who turns trimming on gets for a model family: the live trimmer picks it
from the pool's model family, `trim-replay` from each trace's `model` field (unless `--family`
is given). The Sky-T1 and LIMO values and the STATED bar were chosen from replays of all the
development traces; the QwQ M = 0 and the R1 thought-end bar were picked on the train half of
the problems (`trim-replay --split train`) and checked on the held-out half (docs/benchmarks.md
"TrimR replay (issue 16)" shows both halves).

What the measurements say (rule judge, docs/benchmarks.md):

* An answer *stated* as the answer ("the answer is 540", "\\boxed{540}", "I think that's the
  answer") is the only cue precise enough on every family: a concluding sentence about what
  the question asks for ("so the total length is 280 feet", `TARGET`) is an intermediate
  result too often - agreeing on it costs 4-10 pt on R1-distill MATH-500 and QwQ GSM8K.
* QwQ states "the answer is X" only once it has it (94% of its stated candidates are its final
  answer) and then re-checks at length: stopping at the first stated answer (M = 0) saves
  about 26% of its thinking for -0.5 pt, where waiting for a second one (M = 1) saves 18%.
* R1-distill states its answer only at the very end, so a stated bar saves little (2%). Its
  conclusions before a re-check ("... So, the average time is 25 minutes." then "Wait, ...")
  are answers more often than mid-thought ones (63% vs 31% on GSM8K/MATH): at a thought's end
  a number-valued TARGET candidate counts, and two agreeing ones stop it (12% saved). A
  paragraph before "Hmm" ends a thought too; one before "But" does not (R1's "But" doubts: on
  the train half it added 1.4% saved for no loss, on the held-out half it lost 2 traces).
* Underthinking by raw thought count fires on converged QwQ traces (it writes many short
  thoughts). It counts answer-bearing thoughts instead (K stated answers that never agree) and
  the budget share; a quarter of the budget costs 6-25 pt on QwQ / R1-distill MATH, whose long
  traces are mostly right, so only LIMO (long = looping) stops that early (on the train half,
  a quarter of the budget on QwQ and R1 adds 1-2.5% saved for 3 more lost traces).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from verifiers.intermediate import AnswerExtractorConfig, AnswerStrength
from verifiers.judges import RuleJudgeConfig
from verifiers.segmentation import DEFAULT_FAMILY
from verifiers.trimr import TrimRConfig

__all__ = ["PRESETS", "TrimPreset", "judge_configs", "preset_for"]


class TrimPreset(BaseModel):
    """Everything family-specific about trimming one branch."""

    model_config = ConfigDict(frozen=True)

    family: str
    paragraphs: bool = Field(
        default=False, description="Judge every paragraph (finer cut points), not every thought."
    )
    judge: RuleJudgeConfig = Field(default_factory=RuleJudgeConfig)
    trimr: TrimRConfig = Field(default_factory=TrimRConfig)


_STATED = RuleJudgeConfig(min_strength=AnswerStrength.STATED)
_TARGET_LAST_SENTENCE = RuleJudgeConfig(
    min_strength=AnswerStrength.TARGET, extractor=AnswerExtractorConfig(window_sentences=1)
)
_CONVERGENCE = TrimRConfig(
    overthink_m=1,
    underthink_max_thoughts=None,
    underthink_max_answers=6,
)

_NO_BUDGET_STOP = _CONVERGENCE.model_copy(update={"underthink_ratio": 1.0})
# R1 re-checks what it concluded with "Wait" / "Alternatively" / "Let me check": the sentence
# before such a paragraph is a conclusion about what the question asks (TARGET suffices there);
# elsewhere only a stated answer counts.
_RECHECK_MARKERS = frozenset(
    {
        "Wait",
        "Alternatively",
        "Let me check",
        "Let me verify",
        "Let me double-check",
        "Let me double check",
        "Let me confirm",
        "Let me re-examine",
        "To verify",
        "To confirm",
        "To double-check",
        "Double-checking",
        "Just to",
        "Hmm",
    }
)
_STATED_OR_TARGET_AT_THOUGHT_END = _STATED.model_copy(
    update={
        "thought_end_strength": AnswerStrength.TARGET,
        "thought_end_markers": _RECHECK_MARKERS,
    }
)

PRESETS: Mapping[str, TrimPreset] = MappingProxyType(
    {
        p.family: p
        for p in (
            TrimPreset(family=DEFAULT_FAMILY, judge=_STATED, trimr=_CONVERGENCE),
            # QwQ and R1-distill: long traces are mostly right (they converge late), so the
            # budget share never stops them; non-convergence means K answers that disagree.
            TrimPreset(
                family="qwq",
                paragraphs=True,
                judge=_STATED,
                trimr=_NO_BUDGET_STOP.model_copy(update={"overthink_m": 0}),
            ),
            TrimPreset(
                family="deepseek_r1",
                paragraphs=True,
                judge=_STATED_OR_TARGET_AT_THOUGHT_END,
                trimr=_NO_BUDGET_STOP,
            ),
            # Sky-T1 rarely says "the answer is": it concludes "So, the median is 81." as the
            # last sentence of a thought; read only that sentence (earlier ones are steps).
            TrimPreset(family="sky_t1", judge=_TARGET_LAST_SENTENCE, trimr=_CONVERGENCE),
            # LIMO writes no thinking markers: its whole output is the thought chain. Its long
            # traces are loops that never settle (4 of 5 past a quarter of the budget are
            # wrong), so a quarter of the budget without convergence stops it.
            TrimPreset(
                family="limo",
                judge=_STATED,
                trimr=_CONVERGENCE.model_copy(update={"underthink_ratio": 0.25}),
            ),
        )
    }
)


def preset_for(family: str) -> TrimPreset:
    """The family's preset; families without one get the generic preset."""
    return PRESETS.get(family, PRESETS[DEFAULT_FAMILY])


def judge_configs() -> dict[str, RuleJudgeConfig]:
    """Per-family rule-judge settings (for `RuleJudge(by_family=...)`)."""
    return {name: preset.judge for name, preset in PRESETS.items()}
