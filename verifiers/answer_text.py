"""Reading a thought's text: its sentences, and a candidate answer as a value.

`split_sentences` cuts a thought into the sentences the extractor and the judges read;
`answer_value` turns a stated candidate into what an equivalence checker can compare;
`is_value` and `names_foreign_unknown` tell a result from a step written in unknowns.
"""

from __future__ import annotations

import re

__all__ = ["answer_value", "is_value", "names_foreign_unknown", "split_sentences"]

_DISPLAY_BLOCK = re.compile(r"\\\[(?:.|\n)*?\\\]|\$\$(?:.|\n)*?\$\$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\(])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a thought; display math and "...:" lead-ins join the sentence they close."""
    flat = _DISPLAY_BLOCK.sub(lambda m: " " + " ".join(m.group(0).split()) + " ", text)
    units: list[str] = []
    for raw_line in flat.split("\n"):
        line = raw_line.strip()
        if not line:
            continue
        if units and (units[-1].endswith(":") or line.startswith(("\\[", "$$"))):
            units[-1] = f"{units[-1]} {line}"
        else:
            units.append(line)
    sentences: list[str] = []
    for unit in units:
        sentences.extend(part.strip() for part in _SENTENCE_END.split(unit) if part.strip())
    return sentences


_UNIT_TAIL = re.compile(
    r"^(?P<v>[-+]?\\?\$?\s?[\d.,/]*\d%?)\s+(?P<w>[A-Za-z][A-Za-z'-]*(?:\s+[A-Za-z][A-Za-z'-]*){0,3})$"
)
_SQRT_WORD = re.compile(r"(?:√|\bsqrt)\s*(?:\((?P<p>[^()]+)\)|(?P<n>\d+(?:\.\d+)?|[a-z]))")


def answer_value(answer: str) -> str:
    """A candidate as a value an equivalence checker can read: "5 times" -> "5", "$36" -> "36",
    "6√2" -> "6\\sqrt{2}", "20000 over pi" -> "20000/\\pi". Unit words are dropped only after a
    plain number, so "2x + 1" or "x = 3 or x = 5" keep their letters."""
    value = answer.strip()
    unit = _UNIT_TAIL.match(value)
    if unit is not None and not set(unit.group("w").lower().split()) & {"pi", "i", "e"}:
        value = unit.group("v")
    value = re.sub(r"^\\?\$\s?(?=\d)", "", value)
    value = _SQRT_WORD.sub(lambda m: "\\sqrt{" + (m.group("p") or m.group("n")) + "}", value)
    value = re.sub(r"\s+over\s+", "/", value)
    return re.sub(r"(?<![\\A-Za-z])pi\b", r"\\pi", value)


_LATEX_WORDS = re.compile(r"\\[A-Za-z]+|sqrt|pi|infty|cdot|times|(?<![A-Za-z])i\b")


def is_value(answer: str) -> bool:
    """A number-valued candidate: digits, and no letters besides LaTeX / function names.

    "D^2", "10E + 5B + 30T - 25" or "(6y^2 - 7xy)/x" name quantities in terms of unknowns
    (a definition or a step), where "6\\sqrt{2}" or "400/11" is a result."""
    value = answer_value(answer)
    return bool(re.search(r"\d", value)) and not re.search(r"[A-Za-z]", _LATEX_WORDS.sub("", value))


_SYMBOL = r"(?<![A-Za-z\\]){}(?![A-Za-z])"


def names_foreign_unknown(answer: str, problem: str) -> bool:
    """Is the candidate written in terms of a symbol the problem never uses?

    "[(N + (N/2))/5] * (N - 12)" for a problem that says "the number": the model named an
    unknown to set up an equation, so the expression is a step, not an answer."""
    letters = set(
        re.findall(_SYMBOL.format("[A-Za-z]"), _LATEX_WORDS.sub(" ", answer_value(answer)))
    )
    return any(not re.search(_SYMBOL.format(letter), problem) for letter in letters)
