"""Per-family thinking switches: how to turn thinking explicitly ON (slow) and OFF (fast).

Each model family switches thinking its own way, and a switch that is only implied (the model's
default) is the one that silently does nothing. So every family has an explicit ON and OFF:

============== ============================================ ===================================
family         fast (OFF)                                   slow (ON)
============== ============================================ ===================================
openpangu      `` /no_think`` appended to the last user     client soft switches removed (slow
               turn (`` /auto_think``: the model's own      is the model's default)
               adaptive mode)
qwen3          ``enable_thinking=False`` template kwarg     ``enable_thinking=True``
deepseek_r1,   a closed, empty thinking block prefilled     the block opened by the prefill
qwq, sky_t1    after the generation prompt                  unless the template opens it
generic,       a system instruction to answer directly,     a system instruction to think in
prompted_think without step-by-step working                 ``<think>…</think>`` plus a GBNF
                                                            grammar that forces that format
============== ============================================ ===================================

Instruction models ignore a request to use tags when they are only asked (issue 8 measured 0 of
4 on Qwen2.5-Coder), hence the grammar; it needs an engine with GBNF support (llama.cpp). Asked
nothing, such a model still writes its working out (Qwen2.5-Coder-1.5B: 483 tokens on MATH-500
against 598 thinking), so their OFF is an explicit instruction too. A request that chose no mode
is sent as is (:meth:`ModeSwitch.as_sent`): the service does not rewrite what nobody asked for.

A :class:`ModePlan` is what the service does with a request: the messages to render, the
template kwargs, text appended to the rendered prompt, a grammar, and which family's markers
split the output (with whether the output starts inside the thinking block). This module is
pure: a family is read through the :class:`FamilyMarkers` protocol, which
``verifiers.families.ModelFamily`` satisfies.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from types import MappingProxyType
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from policies.modes import ThinkingMode

THINK_INSTRUCTION = (
    "Reason about the request step by step before you answer. Write all of that reasoning "
    "between <think> and </think>, then close the block and give your final answer after "
    "</think>."
)
"""System instruction of the prompted-thinking switch (it matches ``grammars/think.gbnf``)."""

ANSWER_INSTRUCTION = (
    "Answer directly. Do not write out step-by-step working: give the final answer, with at "
    "most one short sentence of justification."
)
"""System instruction of the prompted-thinking switch's fast mode (thinking explicitly OFF)."""


class FamilyMarkers(Protocol):
    """What a switch reads from a model family (``verifiers.families.ModelFamily`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def think_open(self) -> str | None: ...
    @property
    def think_close(self) -> str | None: ...
    @property
    def starts_in_thinking(self) -> bool: ...


def load_grammar(name: str) -> str:
    """The text of ``policies/grammars/<name>.gbnf``; FileNotFoundError naming the known ones."""
    folder = resources.files("policies.grammars")
    path = folder.joinpath(f"{name}.gbnf")
    if not path.is_file():
        known = sorted(
            p.name.removesuffix(".gbnf") for p in folder.iterdir() if p.name.endswith(".gbnf")
        )
        raise FileNotFoundError(f"no grammar {name!r}; known: {known}")
    return path.read_text(encoding="utf-8")


class ModePlan(BaseModel):
    """How to run one request in one mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ThinkingMode = Field(description="fast, slow, or auto when the family decides itself.")
    family: str = Field(description="The pool's model family.")
    switch: str = Field(description="The switch applied, for the request record.")
    messages: list[dict[str, str]] = Field(description="Chat messages to render.")
    template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Chat-template kwargs (the client's, then the switch's)."
    )
    prefill: str = Field("", description="Text appended to the rendered prompt.")
    grammar: str | None = Field(None, description="GBNF grammar constraining the output.")
    split_family: str = Field(description="Family whose markers split the output.")
    output_starts_in_thinking: bool = Field(
        description="The generated text begins inside the thinking block."
    )
    reasoning_expected: bool | None = Field(
        description="Whether the output will hold reasoning (None: the model decides)."
    )

    @classmethod
    def switched(
        cls,
        family: FamilyMarkers,
        mode: ThinkingMode,
        how: str,
        messages: list[dict[str, str]],
        kwargs: dict[str, Any],
        *,
        starts_in_thinking: bool,
        split_family: str | None = None,
        reasoning_expected: bool | None = None,
        prefill: str = "",
        grammar: str | None = None,
    ) -> ModePlan:
        """``family`` switched to ``mode`` by ``how``; the output splits by ``split_family``
        (default: the family's own markers) and holds reasoning in slow mode unless told."""
        expected = {ThinkingMode.FAST: False, ThinkingMode.SLOW: True}.get(mode)
        return cls(
            mode=mode,
            family=family.name,
            switch=f"{family.name}: {how}",
            messages=messages,
            template_kwargs=kwargs,
            prefill=prefill,
            grammar=grammar,
            split_family=split_family or family.name,
            output_starts_in_thinking=starts_in_thinking,
            reasoning_expected=expected if reasoning_expected is None else reasoning_expected,
        )

    def prompt(self, rendered: str) -> str:
        """The prompt sent to the worker: the rendered chat plus the prefill."""
        return rendered + self.prefill


def _copy(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [dict(m) for m in messages]


def _instruct(messages: list[dict[str, str]], instruction: str) -> None:
    """Add ``instruction`` to the leading system message, or as one."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        first["content"] = f"{first.get('content', '').rstrip()}\n\n{instruction}".lstrip()
    else:
        messages.insert(0, {"role": "system", "content": instruction})


def _last_user(messages: list[dict[str, str]]) -> dict[str, str] | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message
    return None


class ModeSwitch(abc.ABC):
    """Template method: :meth:`plan` checks the mode and calls :meth:`fast` / :meth:`slow`.

    A subclass writes the two (three with a native auto mode) builders; ``native_auto`` says
    whether the family has a trained mode that decides by itself whether to think.
    """

    native_auto: bool = False

    def plan(
        self,
        family: FamilyMarkers,
        mode: ThinkingMode,
        messages: Sequence[Mapping[str, str]],
        *,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ModePlan:
        """The plan for ``mode``; ``auto`` only where the family has a native auto mode."""
        kwargs = dict(template_kwargs or {})
        if mode is ThinkingMode.FAST:
            return self.fast(family, _copy(messages), kwargs=kwargs)
        if mode is ThinkingMode.SLOW:
            return self.slow(family, _copy(messages), kwargs=kwargs)
        if not self.native_auto:
            raise ValueError(
                f"family {family.name!r} has no native auto mode; resolve auto to fast or slow"
            )
        return self.auto(family, _copy(messages), kwargs=kwargs)

    @abc.abstractmethod
    def fast(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        """Thinking explicitly OFF."""

    @abc.abstractmethod
    def slow(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        """Thinking explicitly ON."""

    def auto(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        """The family's own adaptive mode (only when ``native_auto``)."""
        raise NotImplementedError

    def as_sent(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan | None:
        """The request unswitched, when that differs from the family's default mode's switch
        (None: the default mode's switch is what the model does unswitched)."""
        return None


class SoftSwitchSuffix(ModeSwitch):
    """Families switched by a marker at the end of the last user turn (openPangu).

    Markers a client already typed at the end of the turn are removed first, so the turn ends
    with exactly the marker of the mode the service chose.
    """

    native_auto = True

    def __init__(self, *, fast: str, auto: str, slow: str = "") -> None:
        self._suffix = {ThinkingMode.FAST: fast, ThinkingMode.AUTO: auto, ThinkingMode.SLOW: slow}
        markers = "|".join(re.escape(s.strip()) for s in (fast, auto, slow) if s.strip())
        self._typed = re.compile(rf"(?:\s*(?:{markers}))+\s*$")

    def _plan(
        self,
        family: FamilyMarkers,
        mode: ThinkingMode,
        *,
        messages: list[dict[str, str]],
        kwargs: dict[str, Any],
    ) -> ModePlan:
        suffix = self._suffix[mode]
        turn = _last_user(messages)
        if turn is not None:
            turn["content"] = self._typed.sub("", turn.get("content", "")) + suffix
        shown = repr(suffix) if suffix else "no marker"
        where = "the last user turn" if turn is not None else "no user turn to mark"
        return ModePlan.switched(
            family,
            mode,
            f"{shown} at the end of {where}",
            messages,
            kwargs,
            starts_in_thinking=family.starts_in_thinking,
        )

    def fast(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plan(family, ThinkingMode.FAST, messages=messages, kwargs=kwargs)

    def slow(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plan(family, ThinkingMode.SLOW, messages=messages, kwargs=kwargs)

    def auto(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plan(family, ThinkingMode.AUTO, messages=messages, kwargs=kwargs)


class TemplateFlagSwitch(ModeSwitch):
    """Families whose chat template takes a boolean kwarg (Qwen3's ``enable_thinking``).

    The switch's value overrides the client's kwarg: the resolver has already turned a
    client's flag into the mode.
    """

    def __init__(self, kwarg: str = "enable_thinking") -> None:
        self.kwarg = kwarg

    def _plan(
        self,
        family: FamilyMarkers,
        *,
        on: bool,
        messages: list[dict[str, str]],
        kwargs: dict[str, Any],
    ) -> ModePlan:
        return ModePlan.switched(
            family,
            ThinkingMode.SLOW if on else ThinkingMode.FAST,
            f"chat template {self.kwarg}={on}",
            messages,
            {**kwargs, self.kwarg: on},
            starts_in_thinking=family.starts_in_thinking and on,
        )

    def fast(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plan(family, on=False, messages=messages, kwargs=kwargs)

    def slow(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plan(family, on=True, messages=messages, kwargs=kwargs)


def _markers(family: FamilyMarkers) -> tuple[str, str]:
    if not (family.think_open and family.think_close):
        raise ValueError(f"family {family.name!r} has no thinking markers to prefill")
    return family.think_open, family.think_close


class ThinkingBlockPrefill(ModeSwitch):
    """Always-thinking families (DeepSeek-R1, QwQ, Sky-T1): the block is controlled by prefill.

    Fast closes an empty block right after the generation prompt (only the close marker when
    the template already opened it: ``starts_in_thinking``); slow opens the block when the
    template does not, so the output starts inside it either way.
    """

    def fast(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        think_open, think_close = _markers(family)
        prefill = f"\n{think_close}\n\n"
        if not family.starts_in_thinking:
            prefill = think_open + "\n" + prefill
        return ModePlan.switched(
            family,
            ThinkingMode.FAST,
            f"empty thinking block prefilled ({prefill!r})",
            messages,
            kwargs,
            starts_in_thinking=False,
            prefill=prefill,
        )

    def slow(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        think_open, _ = _markers(family)
        prefill = "" if family.starts_in_thinking else think_open + "\n"
        switch = (
            "the chat template opens the thinking block"
            if family.starts_in_thinking
            else f"thinking block opened by prefill ({prefill!r})"
        )
        return ModePlan.switched(
            family,
            ThinkingMode.SLOW,
            switch,
            messages,
            kwargs,
            starts_in_thinking=True,
            prefill=prefill,
        )


class PromptedThinking(ModeSwitch):
    """Instruction models with no thinking mode: slow asks for ``<think>…</think>`` in the
    system prompt and forces that format with a grammar; fast asks for a direct answer.

    An instruction joins an existing leading system message rather than adding a second one
    (many templates accept a system message only first).
    """

    def __init__(
        self,
        *,
        instruction: str = THINK_INSTRUCTION,
        grammar: str | None = None,
        answer_instruction: str = ANSWER_INSTRUCTION,
        split_family: str = "prompted_think",
        plain_family: str = "generic",
    ) -> None:
        self.instruction = instruction
        self.grammar = grammar if grammar is not None else load_grammar("think")
        self.answer_instruction = answer_instruction
        self.split_family = split_family
        self.plain_family = plain_family

    def _plain(
        self,
        family: FamilyMarkers,
        messages: list[dict[str, str]],
        kwargs: dict[str, Any],
        switch: str,
    ) -> ModePlan:
        return ModePlan.switched(
            family,
            ThinkingMode.FAST,
            switch,
            messages,
            kwargs,
            starts_in_thinking=False,
            split_family=self.plain_family,
        )

    def fast(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        _instruct(messages, self.answer_instruction)
        return self._plain(family, messages, kwargs, "system instruction to answer directly")

    def as_sent(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        return self._plain(family, messages, kwargs, "messages as sent (no mode requested)")

    def slow(
        self, family: FamilyMarkers, messages: list[dict[str, str]], *, kwargs: dict[str, Any]
    ) -> ModePlan:
        _instruct(messages, self.instruction)
        return ModePlan.switched(
            family,
            ThinkingMode.SLOW,
            "system instruction + GBNF grammar forcing <think>…</think>",
            messages,
            kwargs,
            starts_in_thinking=False,
            split_family=self.split_family,
            grammar=self.grammar,
        )


def default_switches() -> dict[str, ModeSwitch]:
    """The switch of every family in ``verifiers.families.FAMILIES``."""
    prefill = ThinkingBlockPrefill()
    prompted = PromptedThinking()
    return {
        "generic": prompted,
        "prompted_think": prompted,
        "deepseek_r1": prefill,
        "qwq": prefill,
        "sky_t1": prefill,
        "qwen3": TemplateFlagSwitch("enable_thinking"),
        "openpangu": SoftSwitchSuffix(fast=" /no_think", auto=" /auto_think"),
    }


class SwitchTable:
    """Family name → switch; a miss lists the known families."""

    def __init__(self, switches: Mapping[str, ModeSwitch] | None = None) -> None:
        self._switches = MappingProxyType(
            dict(switches) if switches is not None else default_switches()
        )

    def __contains__(self, family: object) -> bool:
        return family in self._switches

    def families(self) -> Iterable[str]:
        return self._switches.keys()

    def switch_for(self, family: str) -> ModeSwitch:
        try:
            return self._switches[family]
        except KeyError:
            known = ", ".join(sorted(self._switches))
            raise KeyError(f"no thinking switch for family {family!r}; known: {known}") from None

    def plan(
        self,
        family: FamilyMarkers,
        mode: ThinkingMode,
        messages: Sequence[Mapping[str, str]],
        *,
        template_kwargs: Mapping[str, Any] | None = None,
        as_sent: bool = False,
    ) -> ModePlan:
        """Apply ``family``'s switch for ``mode`` (see :meth:`ModeSwitch.plan`); ``as_sent``:
        nobody chose the mode, so the family's unswitched plan where it has one."""
        switch = self.switch_for(family.name)
        if as_sent:
            plan = switch.as_sent(family, _copy(messages), kwargs=dict(template_kwargs or {}))
            if plan is not None:
                return plan
        return switch.plan(family, mode, messages, template_kwargs=template_kwargs)
