"""The one trace model: recorded generations and sample banks, their thinking split, final
answer, per-problem groups, and real token counts. Used by the replay backend, trim-replay and
the simulator alike."""

from verifiers.traces.loading import ProblemGroup, group_by_problem, load_traces, sample_traces
from verifiers.traces.model import ThinkingSplit, Trace, TraceFormatError
from verifiers.traces.tokens import QWEN25_TOKENIZER, TokenCounter

__all__ = [
    "QWEN25_TOKENIZER",
    "ProblemGroup",
    "ThinkingSplit",
    "TokenCounter",
    "Trace",
    "TraceFormatError",
    "group_by_problem",
    "load_traces",
    "sample_traces",
]
