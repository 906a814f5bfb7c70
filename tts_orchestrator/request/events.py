"""What the orchestrator streams to the API layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tts_orchestrator.state.records import RecordUsage


@dataclass
class OutputEvent:
    """A piece of the answer: deltas while streaming; the last one has `finish_reason`."""

    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None
    usage: RecordUsage | None = None
    tts: dict[str, Any] | None = None
