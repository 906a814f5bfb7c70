from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from policies.modes import ThinkingMode
from policies.switches import (
    ANSWER_INSTRUCTION,
    THINK_INSTRUCTION,
    ModePlan,
    PromptedThinking,
    SwitchTable,
    load_grammar,
)
from verifiers.families import FAMILIES, get_family

FAST, SLOW, AUTO = ThinkingMode.FAST, ThinkingMode.SLOW, ThinkingMode.AUTO
USER = [{"role": "user", "content": "What is 2 + 2?"}]
GRAMMAR = load_grammar("think")


@dataclass(frozen=True)
class Case:
    family: str
    mode: ThinkingMode
    last_user: str = "What is 2 + 2?"
    system: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    prefill: str = ""
    grammar: bool = False
    split_family: str = ""
    starts_in_thinking: bool = False
    reasoning: bool | None = False


CASES = [
    Case("openpangu", FAST, last_user="What is 2 + 2? /no_think", split_family="openpangu"),
    Case("openpangu", SLOW, split_family="openpangu", reasoning=True),
    Case(
        "openpangu",
        AUTO,
        last_user="What is 2 + 2? /auto_think",
        split_family="openpangu",
        reasoning=None,
    ),
    Case("qwen3", FAST, kwargs={"enable_thinking": False}, split_family="qwen3"),
    Case("qwen3", SLOW, kwargs={"enable_thinking": True}, split_family="qwen3", reasoning=True),
    # The R1 / QwQ templates open the block themselves: fast only closes it.
    Case("deepseek_r1", FAST, prefill="\n</think>\n\n", split_family="deepseek_r1"),
    Case(
        "deepseek_r1",
        SLOW,
        split_family="deepseek_r1",
        starts_in_thinking=True,
        reasoning=True,
    ),
    Case("qwq", FAST, prefill="\n</think>\n\n", split_family="qwq"),
    Case("qwq", SLOW, split_family="qwq", starts_in_thinking=True, reasoning=True),
    # Sky-T1's template does not open the block: fast prefills both markers, slow the opener.
    Case(
        "sky_t1",
        FAST,
        prefill="<|begin_of_thought|>\n\n<|end_of_thought|>\n\n",
        split_family="sky_t1",
    ),
    Case(
        "sky_t1",
        SLOW,
        prefill="<|begin_of_thought|>\n",
        split_family="sky_t1",
        starts_in_thinking=True,
        reasoning=True,
    ),
    Case("generic", FAST, system=ANSWER_INSTRUCTION, split_family="generic"),
    Case(
        "generic",
        SLOW,
        system=THINK_INSTRUCTION,
        grammar=True,
        split_family="prompted_think",
        reasoning=True,
    ),
    Case("prompted_think", FAST, system=ANSWER_INSTRUCTION, split_family="generic"),
    Case(
        "prompted_think",
        SLOW,
        system=THINK_INSTRUCTION,
        grammar=True,
        split_family="prompted_think",
        reasoning=True,
    ),
]


def _plan(family: str, mode: ThinkingMode, messages: list[dict[str, str]] = USER) -> ModePlan:
    return SwitchTable().plan(get_family(family), mode, messages)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.family}-{c.mode.value}")
def test_family_switch_renders_the_plan(case: Case) -> None:
    plan = _plan(case.family, case.mode)
    users = [m for m in plan.messages if m["role"] == "user"]
    systems = [m["content"] for m in plan.messages if m["role"] == "system"]
    assert users[-1]["content"] == case.last_user
    assert systems == ([case.system] if case.system else [])
    assert plan.template_kwargs == case.kwargs
    assert plan.prefill == case.prefill
    assert plan.grammar == (GRAMMAR if case.grammar else None)
    assert plan.split_family == case.split_family
    assert plan.output_starts_in_thinking is case.starts_in_thinking
    assert plan.reasoning_expected is case.reasoning
    assert plan.mode is case.mode
    assert plan.family == case.family
    assert plan.switch.startswith(case.family)


def test_every_family_has_an_explicit_on_and_off() -> None:
    table = SwitchTable()
    assert set(table.families()) == set(FAMILIES)
    for name, family in FAMILIES.items():
        fast = table.plan(family, FAST, USER)
        slow = table.plan(family, SLOW, USER)
        assert fast.reasoning_expected is False, name
        assert slow.reasoning_expected is True, name
        assert fast.model_dump(exclude={"mode", "switch"}) != slow.model_dump(
            exclude={"mode", "switch"}
        ), name


def test_the_input_messages_are_not_mutated() -> None:
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    before = [dict(m) for m in messages]
    for family in ("openpangu", "generic"):
        for mode in (FAST, SLOW):
            _plan(family, mode, messages)
    assert messages == before


@pytest.mark.parametrize(
    ("typed", "mode", "expected"),
    [
        ("Hi /no_think", SLOW, "Hi"),
        ("Hi /no_think", FAST, "Hi /no_think"),
        ("Hi /auto_think /no_think  ", FAST, "Hi /no_think"),
        ("Hi /no_think", AUTO, "Hi /auto_think"),
        ("Say /no_think twice", FAST, "Say /no_think twice /no_think"),
    ],
    ids=["slow-removes-typed-off", "fast-once", "stacked", "auto-replaces", "mid-text-kept"],
)
def test_openpangu_soft_switch_typed_by_the_client_is_replaced(
    typed: str, mode: ThinkingMode, expected: str
) -> None:
    plan = _plan("openpangu", mode, [{"role": "user", "content": typed}])
    assert plan.messages[-1]["content"] == expected


def test_openpangu_marks_the_last_user_turn_only() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    plan = _plan("openpangu", FAST, messages)
    assert [m["content"] for m in plan.messages] == ["first", "ok", "second /no_think"]


def test_qwen3_flag_overrides_the_client_kwarg_and_keeps_the_others() -> None:
    plan = SwitchTable().plan(
        get_family("qwen3"),
        FAST,
        USER,
        template_kwargs={"enable_thinking": True, "tools_hint": "x"},
    )
    assert plan.template_kwargs == {"enable_thinking": False, "tools_hint": "x"}


@pytest.mark.parametrize(
    ("mode", "instruction"), [(SLOW, THINK_INSTRUCTION), (FAST, ANSWER_INSTRUCTION)]
)
def test_generic_joins_an_existing_system_message(mode: ThinkingMode, instruction: str) -> None:
    plan = _plan("generic", mode, [{"role": "system", "content": "Be brief."}, *USER])
    assert [m["role"] for m in plan.messages] == ["system", "user"]
    assert plan.messages[0]["content"] == f"Be brief.\n\n{instruction}"


def test_as_sent_leaves_generic_requests_alone_and_others_to_their_switch() -> None:
    table = SwitchTable()
    plain = table.plan(get_family("generic"), FAST, USER, as_sent=True)
    assert plain.messages == USER
    assert plain.grammar is None
    assert plain.mode is FAST
    assert "as sent" in plain.switch
    # A family with no distinct unswitched plan gets its mode's switch.
    r1 = table.plan(get_family("deepseek_r1"), SLOW, USER, as_sent=True)
    assert r1 == table.plan(get_family("deepseek_r1"), SLOW, USER)


@pytest.mark.parametrize("family", ["generic", "qwen3", "deepseek_r1"])
def test_auto_needs_a_native_auto_mode(family: str) -> None:
    with pytest.raises(ValueError, match="no native auto mode"):
        _plan(family, AUTO)


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known: .*qwen3"):
        SwitchTable().switch_for("llama4")


def test_prompt_appends_the_prefill_to_the_rendered_chat() -> None:
    plan = _plan("deepseek_r1", FAST)
    assert plan.prompt("<|Assistant|><think>\n") == "<|Assistant|><think>\n\n</think>\n\n"


def test_custom_instruction_and_grammar() -> None:
    table = SwitchTable({"generic": PromptedThinking(instruction="Think.", grammar="root ::= .*")})
    plan = table.plan(get_family("generic"), SLOW, USER)
    assert plan.messages[0] == {"role": "system", "content": "Think."}
    assert plan.grammar == "root ::= .*"


def _rules(grammar: str) -> tuple[set[str], set[str]]:
    """(defined, referenced) rule names of a GBNF text: literals, classes and comments aside."""
    text = re.sub(r"#[^\n]*", "", grammar)
    text = re.sub(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]', " ", text)
    defined, referenced = set(), set()
    for name, body in re.findall(
        r"^([a-z][a-z0-9-]*) ::=(.*?)(?=^[a-z][a-z0-9-]* ::=|\Z)", text, re.M | re.S
    ):
        defined.add(name)
        referenced |= set(re.findall(r"\b[a-z][a-z0-9-]*\b", body))
    return defined, referenced


def test_think_grammar_is_well_formed_and_opens_with_the_marker() -> None:
    defined, referenced = _rules(GRAMMAR)
    assert "root" in defined
    assert referenced == defined - {"root"}
    assert re.search(r'^root ::= "<think>\\n" thought$', GRAMMAR, re.M)
    closes = re.findall(r"^(?:close|boxclose) ::= (.*)$", GRAMMAR, re.M)
    assert len(closes) == 2
    assert all('"</think>\\n' in c or "\\n</think>\\n" in c for c in closes)


def test_unknown_grammar_lists_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match=r"known: \['think'\]"):
        load_grammar("nope")
