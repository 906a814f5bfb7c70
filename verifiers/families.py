"""The model-family table: where thinking starts and ends, and how a family switches it.

Pure data. The service, the verifiers and the mode router all read it; new families are one
entry. Lookups list the valid names on a miss.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelFamily(BaseModel):
    """How one family of models marks its chain of thought."""

    model_config = ConfigDict(frozen=True)

    name: str
    think_open: str | None = Field(None, description="Marker opening the thinking block.")
    think_close: str | None = Field(None, description="Marker closing the thinking block.")
    starts_in_thinking: bool = Field(
        False, description="The chat template already opened the block (output starts inside)."
    )
    native_thinking: bool = Field(
        False, description="Trained to think; False means thinking must be asked for."
    )

    @property
    def has_markers(self) -> bool:
        return bool(self.think_open and self.think_close)


FAMILIES: dict[str, ModelFamily] = {
    f.name: f
    for f in (
        ModelFamily(name="generic"),
        ModelFamily(
            name="deepseek_r1",
            think_open="<think>",
            think_close="</think>",
            starts_in_thinking=True,
            native_thinking=True,
        ),
        ModelFamily(
            name="qwq",
            think_open="<think>",
            think_close="</think>",
            starts_in_thinking=True,
            native_thinking=True,
        ),
        ModelFamily(
            name="qwen3", think_open="<think>", think_close="</think>", native_thinking=True
        ),
        ModelFamily(
            name="openpangu",
            think_open="[unused16]",
            think_close="[unused17]",
            native_thinking=True,
        ),
        ModelFamily(
            name="sky_t1",
            think_open="<|begin_of_thought|>",
            think_close="<|end_of_thought|>",
            native_thinking=True,
        ),
        # Instruction models asked to think inside tags (no native thinking mode).
        ModelFamily(name="prompted_think", think_open="<think>", think_close="</think>"),
    )
}


def get_family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None
