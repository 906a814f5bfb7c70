"""What a math question asks for, read from its text, and the math-span helpers it shares.

`QuestionTarget` lets the intermediate-answer extractor tell a concluding answer ("the remainder
is 9", "p(5) = -5/12") from a sub-result: it holds the asked symbols / expressions and the head
noun of the asked phrase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["QuestionTarget"]

_MATH_SPAN = re.compile(
    r"\\\((?:.|\n)+?\\\)|\\\[(?:.|\n)+?\\\]|\$\$(?:.|\n)+?\$\$|\$[^$]+?\$",
)
_ASKING = re.compile(
    r"\b(?:find|compute|evaluate|simplify|determine|solve for|calculate|what|how|which|convert"
    r"|expand|factor|rationalize|write|express)\b",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(r"[.?!](?=\s|$)|\n\s*\n(?!\s*\x00)")
# The asked noun phrase: after the verb (and "is the" / "many"), up to a preposition or clause.
_ASKED_PHRASE = re.compile(
    r"^(?:find|compute|determine|calculate|what(?:\s+(?:is|was|are|were))?|how\s+many|how\s+much"
    r"|which|express|write|evaluate|simplify)\s+(?:(?:is|are|was)\s+)?(?:the\s+|all\s+|an?\s+)?"
    r"(?P<np>[\w\s'-]{2,80}?)(?=\s+(?:of|in|on|for|that|when|if|is|are|was|were|does|do|did|can"
    r"|could|will|would|should|must|might|may|has|have|had|to|such|where|whose|with|as|at|from"
    r"|by)\b|[?.,;:()\x00]|$)",
    re.IGNORECASE,
)
_OF_PHRASE = re.compile(
    r"^\s+of\s+(?:the\s+|all\s+)?(?:\x00\d+\x00)?(?P<np>[\w-][\w\s'-]{1,60}?)(?=\s+(?:of|in|on|for|that|when|if|is"
    r"|are|does|do|can|to|such|where|whose|with)\b|[?.,;:()\x00]|$)",
    re.IGNORECASE,
)
# Words that never identify what is asked ("the number of ...", "all possible values").
_GENERIC_WORDS = frozenset(
    "the a an all any possible many much value values number numbers answer result following"
    " your form and positive negative real integer integers total exact of new each more".split()
)
# Verbs whose conclusions name the expression rather than a noun ("the expression simplifies").
_VERB_NOUNS: dict[str, tuple[str, ...]] = {
    "simplify": ("simplified", "expression"),
    "evaluate": ("expression",),
    "expand": ("expanded", "expression"),
    "factor": ("factored", "factorization"),
    "rationalize": ("rationalized",),
}
_ASKS_FOR_MATH = re.compile(
    r"^(?:what\s+is|compute|evaluate|find|calculate|simplify)\s*:?\s*(?:the\s+value\s+of\s+)?\x00",
    re.IGNORECASE,
)
_NUMERIC = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_INEQUALITY = re.compile(r"[<>≤≥]|\\(?:le|ge|neq|leq|geq|lt|gt)\b")
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


def _math_body(span: str) -> str:
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
        if span.startswith(opener) and span.endswith(closer) and len(span) >= len(opener) * 2:
            return span[len(opener) : len(span) - len(closer)]
    return span


def _squash(latex: str) -> str:
    """Whitespace-free LaTeX without sizing commands or trailing punctuation."""
    text = re.sub(r"\\(?:left|right|displaystyle|,|;|!|quad)", "", latex)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".,;:?")


def _protect_math(sentence: str) -> tuple[str, list[str]]:
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return f"\x00{len(spans) - 1}\x00"

    return _MATH_SPAN.sub(keep, sentence), spans


def _asked_clauses(problem: str) -> Iterable[tuple[str, str, list[str]]]:
    """(verb, clause from the verb to the end of its sentence, math spans) per asking verb.

    The clause keeps math spans as placeholders ("Find \\x000\\x00." for "Find $p(5).$").
    """
    prose, spans = _protect_math(problem)
    for verb in _ASKING.finditer(prose):
        end = _CLAUSE_END.search(prose, verb.end())
        yield verb.group(0), prose[verb.start() : end.start() if end else len(prose)], spans


def _asked_nouns(clause: str) -> list[str]:
    """The head (last content word) of the asked noun phrase, through "of" when it is generic.

    "the smallest positive perfect cube" -> cube; "the number of $x$-intercepts" -> intercepts.
    """
    phrase = _ASKED_PHRASE.match(clause)
    if phrase is None:
        return []
    words = _content_words(phrase.group("np"))
    rest = clause[phrase.end() :]
    while not words:
        nested = _OF_PHRASE.match(rest)
        if nested is None:
            break
        words = _content_words(nested.group("np"))
        rest = rest[nested.end() :]
    head = words[-1:]
    synonym = re.match(r"\s*\(([a-z][a-z\s-]{1,30})\)", rest)  # "base-2 digits (bits)"
    if head and synonym is not None:
        head += _content_words(synonym.group(1))[-1:]
    return [_stem(w) for w in head]


def _stem(word: str) -> str:
    """Crude singular: "digits" -> "digit", "roots" -> "root" (enough to match a head noun)."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _content_words(text: str) -> list[str]:
    return [
        w
        for w in re.findall(r"[a-z][a-z'-]+", text.lower())
        if w not in _GENERIC_WORDS and len(w) > 2
    ]


_NAME = re.compile(r"(?<=[a-z,;:]\s)[A-Z][a-z]{2,}(?:'s)?\b")


def proper_names(text: str) -> list[str]:
    """Capitalised words inside a sentence ("how much is left in Ronnie's money" -> Ronnie)."""
    return [m.group(0).removesuffix("'s") for m in _NAME.finditer(text)]


class QuestionTarget(BaseModel):
    """What the question asks for, read from the problem text."""

    model_config = ConfigDict(frozen=True)

    symbols: tuple[str, ...] = Field(
        default=(), description="Asked symbols / expressions, whitespace-free LaTeX."
    )
    nouns: tuple[str, ...] = Field(
        default=(), description="Content words of the asked noun phrase (lower case)."
    )
    names: tuple[str, ...] = Field(
        default=(), description='Capitalised names in the asked clause ("Ronnie").'
    )

    @classmethod
    def from_problem(cls, problem: str) -> QuestionTarget:
        symbols: list[str] = []
        nouns: list[str] = []
        names: list[str] = []

        def add(bucket: list[str], item: str) -> None:
            if item and item not in bucket:
                bucket.append(item)

        for verb, clause, spans in _asked_clauses(problem):
            # "How many values of $x$ ..." asks for a count, not for x.
            counting = re.match(r"how\s+(?:many|much)\b", clause, re.IGNORECASE) is not None
            for placeholder in _PLACEHOLDER.finditer(clause):
                symbol = _squash(_math_body(spans[int(placeholder.group(1))]))
                # Conditions ("$f(n) = n$", "$x > 0$") are not what is asked.
                relation = "=" in symbol or _INEQUALITY.search(symbol) is not None
                if len(symbol) <= 40 and not (counting or relation or _NUMERIC.fullmatch(symbol)):
                    add(symbols, symbol)
            for name in proper_names(clause):
                add(names, name)
            for word in _asked_nouns(clause):
                add(nouns, word)
            for word in _VERB_NOUNS.get(verb.lower(), ()):
                add(nouns, word)
            if _ASKS_FOR_MATH.match(clause):  # "What is $...$?", "Compute $...$."
                add(nouns, "expression")
        # "the product $CD$ of the integers $C$ and $D$" asks for CD, not for C or D.
        compound = [s for s in symbols if len(s) > 1]
        symbols = [s for s in symbols if len(s) > 1 or not any(s in c for c in compound)]
        return cls(symbols=tuple(symbols), nouns=tuple(nouns), names=tuple(names))
