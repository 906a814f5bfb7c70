"""Candidate answers of closed thoughts, graded by how surely they *conclude* the problem.

The hard part is not finding a number at the end of a thought but telling a concluding answer
(one that answers the question) from an intermediate quantity: consecutive thoughts restate
sub-results ("so f(3) = 8", "the discriminant is 4a(a-3)") as often as they restate the answer.
The extractor reads the last `window_sentences` sentences of a thought and grades each
candidate:

* ``BOXED``  - a ``\\boxed{...}``;
* ``STATED`` - an explicit answer statement: "the answer is X", "X is the correct answer";
* ``TARGET`` - a concluding sentence ("so", "therefore", "thus", "which matches", ...) whose
  subject is what the question asks for (`QuestionTarget`): the asked symbol or expression
  (``a``, ``p(5)``, ``\\sqrt{242}``) or the head noun of the asked phrase ("the remainder is
  9", "27 is the smallest such cube");
* ``EXPRESSION`` - a concluding sentence ending in "= X" / "is X" about anything else.

Hedged ("maybe", "if", a question), negated ("invalid", "extraneous") and retracted ("..., but
that can't be right") sentences give no candidate. `confirms` recognises a thought that only
re-confirms the previous answer ("Yes, that checks out.").

On the development traces (complete Sky-T1 MATH-500 and R1-distill), TARGET-or-better
candidates equal the trace's final answer about 2.5 times as often as EXPRESSION ones (66% vs
25%, string match); judges accept from `TARGET` up by default.
"""

from __future__ import annotations

import re
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from verifiers.answer_text import split_sentences
from verifiers.answers import last_boxed
from verifiers.question_target import (
    _INEQUALITY,
    _MATH_SPAN,
    _PLACEHOLDER,
    QuestionTarget,
    _math_body,
    _protect_math,
    _squash,
    _stem,
    proper_names,
)

__all__ = [
    "AnswerExtractorConfig",
    "AnswerStrength",
    "IntermediateAnswer",
    "IntermediateAnswerExtractor",
    "QuestionTarget",
]


class AnswerStrength(IntEnum):
    """How surely a candidate answers the question (higher is surer)."""

    NONE = 0
    EXPRESSION = 1
    TARGET = 2
    STATED = 3
    BOXED = 4


class IntermediateAnswer(BaseModel):
    """The candidate answer of one thought and the evidence for it."""

    model_config = ConfigDict(frozen=True)

    answer: str = Field(description="The candidate answer (LaTeX, delimiters stripped).")
    strength: AnswerStrength = Field(description="How surely it concludes the problem.")
    cue: str = Field(description="Which feature produced it (for logs and evaluation).")
    sentence: str = Field(description="The sentence it was read from.")


class AnswerExtractorConfig(BaseModel):
    """Knobs of the candidate-answer extractor."""

    model_config = ConfigDict(frozen=True)

    window_sentences: int = Field(
        default=3, ge=1, description="How many of the thought's last sentences are searched."
    )
    confirmation_sentences: int = Field(
        default=2, ge=1, description="Last sentences searched for a bare confirmation."
    )
    max_answer_chars: int = Field(
        default=80, ge=1, description="Longer candidates are treated as prose, not answers."
    )


# -- text helpers ---------------------------------------------------------------------------

_CONCLUSION_CUE = re.compile(
    r"^(?:and\s+)?(?:so|thus|therefore|hence|consequently|in conclusion|in summary|overall"
    r"|finally|that means|this means|which means|this gives|that gives|putting it all together"
    r"|rounding|rounded"
    r"|in (?:either|both|any|all) cases?)\b|\b(?:therefore|thus|hence|so)\b"
    r"|\b(?:which|this|that|it) (?:matches|confirms|agrees|checks out|is consistent)",
    re.IGNORECASE,
)
_STATED_AFTER = re.compile(
    r"\b(?:(?:final|correct|right)?\s*answer|final (?:result|value))\s*"
    r"(?:is|should be|would be|must be|will be|of|=|:)\s*"
    r"(?:indeed\s+|still\s+|just\s+)?(?P<a>.+)$",
    re.IGNORECASE,
)
_STATED_BEFORE_P = re.compile(
    r"\s+(?:is|are|should be|must be|seems to be)\s+(?:indeed\s+|definitely\s+|still\s+"
    r"|probably\s+)?(?:the|my|our)\s+(?:correct\s+|final\s+|right\s+|only\s+|unique\s+)?"
    r"(?:valid\s+)?(?:answer|solution)\b(?!\s+(?:to|of|for)\b)",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(?:maybe|perhaps|might|could|suppose|assume|assuming|if i|let's say|not sure|seems? wrong"
    r"|is not|isn't|are not|aren't|can't be|cannot be|doesn't|don't|wrong|mistake|contradiction"
    r"|invalid|not valid|extraneous|reject|rejected|undefined|impossible|not possible|fails?"
    r"|earlier i had|instead of)\b|\?",
    re.IGNORECASE,
)
_PROSE_RUN = re.compile(r"[A-Za-z]{3,}")
_FUNCTION_NAMES = re.compile(r"\\[A-Za-z]+|sqrt|log|ln|sin|cos|tan|cot|sec|csc|exp|mod|infty|pi")
_BUT_CLAUSE = re.compile(r",?\s+\b(?:but|although|though|however|yet)\b", re.IGNORECASE)
_RETRACTION = re.compile(
    r"\b(?:wrong|can't be|cannot be|doesn't|not (?:right|correct|possible)|incorrect|mistake"
    r"|contradict\w*|invalid|wait|no,)",
    re.IGNORECASE,
)
_CONFIRMATION = re.compile(
    r"\b(?:that'?s (?:correct|right)|that is (?:correct|right)|(?:this|that|it|which) (?:checks out"
    r"|confirms|matches)|confirms (?:it|this|that|the|my)|is consistent|same (?:answer|result)"
    r"|seems (?:right|correct)|is correct|that works|i'?m confident|makes sense)\b",
    re.IGNORECASE,
)
_DOUBT = re.compile(
    r"\b(?:not|no|inconsistent|wrong|mistake|maybe|perhaps|but|however|unless)\b|n't\b|\?",
    re.IGNORECASE,
)
_THERE_ARE = re.compile(
    r"\bthere (?:is|are|were|will be) (?:exactly |only )?(?P<rest>.+)$", re.IGNORECASE
)


# -- extraction -----------------------------------------------------------------------------

_COPULA = re.compile(
    r"\s(?:is|are|was|equals|would be|should be|must be|will be|seems to be|comes out to"
    r"|works out to|simplifies to|reduces to|evaluates to|becomes|gives|yields):?\s",
    re.IGNORECASE,
)
_PLAIN_EQUALS = re.compile(r"\s?=\s?")
_PLACEHOLDER_LIST = re.compile(r"\x00\d+\x00(?:(?:\s*,\s*|\s*,?\s+(?:and|or)\s+)\x00\d+\x00)*")
_OPERATOR_WORDS = frozenset({"times", "plus", "minus", "over", "divided", "by"})
_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
}
# "the answer is 5, because missing 5 would ...", "answer: 4 teachers, 2 lessons each, ...": the
# sentence goes on computing after the value, so the value is one item of a list or a premise.
_CONTINUATION = re.compile(r",\s|\s(?:because|since|so|and|then)\s")
_APPROXIMATION = re.compile(r"\bor\b|approximately|about|roughly|≈|~")


def _goes_on(stated: str) -> bool:
    """Does the text after a stated value go on with more numbers and prose (not a list)?"""
    cut = _CONTINUATION.search(stated)
    if cut is None:
        return False
    rest = stated[cut.start() :]
    if _APPROXIMATION.search(rest) or not re.search(r"[\d\x00]", rest):
        return False
    words = {w.lower() for w in re.findall(r"[A-Za-z]{3,}", rest)} - {"and", "then"}
    return bool(words)


_RELATIVE = re.compile(r"(?:which|that|this|it)(?:\s+\w+)?", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r",\s|;\s|\s(?:because|since|while|whereas|when)\s", re.IGNORECASE)
# "But if the question asks for distinct books, then the answer would be three.": hypothetical.
_CONDITION = re.compile(r"\b(?:if|unless|suppose|supposing|assuming)\b", re.IGNORECASE)
_NOT_A_COUNT = frozenset({"of", "more", "way", "another", "thing", "step", "by"})
_ADVERB_START = re.compile(
    r"^\s*(?:indeed|still|also|just|exactly|clearly|definitely|actually|again)\s+", re.IGNORECASE
)
_UNIT_BEFORE = re.compile(r"(?<=\d)(?:\s+[a-z][a-z'-]*){1,2}\s*$")
# "Rounding to one decimal place, the energy gap is approximately 1.3 eV.": a rounded value is
# the one the model reports (an unrounded "approximately 41.81" is often rounded again later).
_ROUNDED = re.compile(r"\bround(?:ed|ing)\b", re.IGNORECASE)
_APPROXIMATELY = re.compile(r"^\s*(?:approximately|about|roughly|≈)\s*", re.IGNORECASE)
# "... is 68 square feet in total": the words after a plain number are its unit, and a unit the
# question asks for ("how many square feet") names the target as well as a subject does.
_VALUE_THEN_WORDS = re.compile(
    r"^(?P<v>[-+]?\\?\$?\s?\d[\d,]*(?:\.\d+)?%?)\s+(?P<w>[A-Za-z][A-Za-z'-]*(?:\s+[A-Za-z][A-Za-z'-]*){0,2})"
)
# "So, Kelsie made 18 cookies." / "So, it should take him 5 hours to get back.": a conclusion
# that ends on a number and its unit through a verb other than "is" (R1 and Sky-T1 write these).
_ENDS_ON_VALUE = re.compile(
    r"(?<![\w.,/^*+-])(?P<v>[-+]?\\?\$?\d[\d,]*(?:\.\d+)?%?)"
    r"(?P<w>(?:\s+[A-Za-z][A-Za-z'-]*){0,4})\s*[.!]?\s*$"
)
# "So, 35 ways for the boys times 6 ways for the girls.": the sentence computes; its last number
# is an operand. "Mikka can order 28 different pizzas ... from the 8 available.": with a second
# number the last one may sit in a modifier, so a verb conclusion carries exactly one number.
# "So, that adds up to 18 representatives in total.": parts checked against a given total.
_ADDS_UP = re.compile(r"\b(?:adds? up|sums? (?:up )?to|totals?)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\x00\d+\x00")
_ARITHMETIC = re.compile(
    r"\b(?:times|plus|minus|divided|multiplied|over|per|each|of)\b|[-+*/×÷·=^]", re.IGNORECASE
)
# "So, n = 8 is correct.": a value the sentence itself declares right.
_DECLARED_RIGHT = re.compile(
    r"\s+(?:is|are)\s+(?:indeed\s+|definitely\s+)?(?:correct|right|confirmed)\s*[.!]?\s*$",
    re.IGNORECASE,
)
# "I think that's the answer." / "That should be it.": points at the previous sentence's result.
_POINTER = re.compile(
    r"^(?:so,?\s+)?(?:i think\s+|i'?m (?:confident|sure)\s+)?(?:that|this|it)(?:'s| is| should be"
    r"| must be)\s+(?:the (?:final |correct )?answer|it|correct|right)\s*[.!]?$",
    re.IGNORECASE,
)
_DANGLING = re.compile(r"[-+*/^=(\[{,]\s*$|\\(?:times|cdot|frac|sqrt)\s*$")
_ARTICLE_START = re.compile(
    r"^(?:indeed\s+|definitely\s+|also\s+|still\s+|clearly\s+)?(?:the|a|an|my|our)\s",
    re.IGNORECASE,
)


def _restore(text: str, spans: list[str]) -> str:
    return _PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], text)


def _leading_value(text: str, spans: list[str]) -> str | None:
    """The answer-shaped run at the start of `text` (math span, number, short expression)."""
    text = text.strip()
    placeholder = _PLACEHOLDER.match(text)
    if placeholder is not None:
        # "\\(n = 1\\) and \\(n = -2\\)" -> "1, -2"; a single span is returned whole.
        listed = _PLACEHOLDER_LIST.match(text)
        items = _PLACEHOLDER.findall(listed.group(0)) if listed else [placeholder.group(1)]
        if len(items) == 1:
            return _math_body(spans[int(items[0])])
        return ", ".join(_top_level_rhs(_math_body(spans[int(i)])).strip() for i in items)
    out: list[str] = []
    depth = 0
    words = text.split()
    for position, word in enumerate(words):
        bare = re.sub(r"(?<![\d)])!+$", "", word.rstrip(".,;:"))  # keep factorials: "8!"
        lowered = bare.lower()
        prose_word = bool(_PROSE_RUN.search(_FUNCTION_NAMES.sub("", bare)))
        following = words[position + 1].lower() if position + 1 < len(words) else ""
        if lowered in _NUMBER_WORDS and following in _NOT_A_COUNT:
            break  # "one of A-E", "one more check": a word, not a value
        mathy = (
            (bool(re.search(r"[\d+\-*/^()\[\]{}=√π∞°×·÷−\\]", bare)) and not prose_word)
            or (lowered in {"pi", "π"} and bool(out))
            or lowered in _NUMBER_WORDS
            or (lowered in _OPERATOR_WORDS and bool(out))
            or (len(bare) == 1 and bare.isalpha() and lowered not in {"a", "i"})
            or (lowered in {"a", "i"} and position == len(words) - 1)
        )
        if depth == 0 and not mathy:
            if (
                lowered in {"and", "or"}
                and out
                and position + 1 < len(words)
                and re.match(r"[-+(\d]|[A-Za-z](?:$|\W)", words[position + 1])
            ):
                out.append(",")
                continue
            break
        ends_clause = word != bare and word[len(bare)] in ".,;:!"
        if depth == 0 and not out and lowered in _NUMBER_WORDS:
            word = word.replace(bare, _NUMBER_WORDS[lowered])
        out.append(word)
        depth += sum(word.count(c) for c in "([{") - sum(word.count(c) for c in ")]}")
        depth = max(depth, 0)
        if depth == 0 and ends_clause:
            break
    while out and out[-1].rstrip(".,;:").lower() in _OPERATOR_WORDS:
        out.pop()  # "20000 over" (then prose): the expression is not complete
    value = " ".join(out).strip().rstrip(".,;:")
    if not value or not re.search(r"[\dA-Za-z]", value):
        return None
    if " , " in value:  # "x = 1 and x = -2" -> "1, -2"
        parts = [_top_level_rhs(p.strip().rstrip(",")).strip() for p in value.split(" , ")]
        return ", ".join(parts)
    return value


def _trailing_value(text: str, spans: list[str]) -> str | None:
    """The answer-shaped run at the end of `text` ("So, 27" -> "27")."""
    words = text.strip().split()
    out: list[str] = []
    for word in reversed(words):
        placeholder = _PLACEHOLDER.fullmatch(word)
        if placeholder is not None:
            out.insert(0, _math_body(spans[int(placeholder.group(1))]))
            break
        if re.fullmatch(r"[-+]?[\d.,/]+%?|[\d+\-*/^()]+", word):
            out.insert(0, word)
            continue
        break
    value = " ".join(out).strip(" ,")
    return value or None


def _clean_answer(raw: str) -> str:
    """Strip delimiters, "x =" prefixes and trailing punctuation from a candidate."""
    body = raw.strip()
    span = _MATH_SPAN.fullmatch(body)
    if span is not None:
        body = _math_body(body)
    body = re.sub(r"\\(?:boxed|displaystyle)\s*", "", body).strip()
    return _top_level_rhs(body).strip().rstrip(".,;: ")


def _split_equation(body: str, *, first: bool = False) -> tuple[str, str] | None:
    """(left, right) around the last (or first) top-level "=", or None ("\\sum_{n=1}" has none).

    Inequalities are not split: "x \\le 3" is an answer, not an assignment.
    """
    if _INEQUALITY.search(body):
        return None
    depth = 0
    cut = -1
    for index, char in enumerate(body):
        if char in "{([":
            depth += 1
        elif char in "})]":
            depth -= 1
        elif char == "=" and depth == 0:
            cut = index
            if first:
                break
    return (body[:cut], body[cut + 1 :]) if cut >= 0 else None


def _top_level_rhs(body: str) -> str:
    """What follows the last top-level "=" ("a = 3" -> "3"); the whole body without one."""
    split = _split_equation(body)
    return body if split is None else split[1]


def _someone_else(subject: str, target: QuestionTarget) -> bool:
    """A subject naming someone the question does not ask about ("So Rissa has $12 left." for
    "How much is left in Ronnie's money?"): someone else's amount."""
    named = set(proper_names(re.sub(r"\x00\d+\x00", " ", subject)))
    return bool(target.names and named and not named & set(target.names))


def _unit_strength(text: str, target: QuestionTarget) -> AnswerStrength:
    """TARGET when the words after a leading plain number name an asked noun ("68 square
    feet" for "how many square feet"), else NONE."""
    unit = _VALUE_THEN_WORDS.match(text.strip())
    if unit is None or _someone_else(text, target):
        return AnswerStrength.NONE
    words = {_stem(w) for w in re.findall(r"[a-z][a-z'-]+", unit.group("w").lower())}
    return AnswerStrength.TARGET if words & set(target.nouns) else AnswerStrength.NONE


def _subject_strength(
    subject: str, target: QuestionTarget, *, math_only: bool = False
) -> AnswerStrength:
    """TARGET when the subject names what the question asks, else EXPRESSION.

    The subject names it when it contains an asked expression (``f(-2)+f(-1)+f(0)``), when an
    asked single symbol is the left side of an equation or a word of the subject ("the annual
    rate r"), or (prose subjects only) when it contains the asked noun's head word.
    """
    if not math_only and _someone_else(subject, target):
        return AnswerStrength.EXPRESSION
    if math_only:
        split = _split_equation(subject, first=True)
        subject = split[0] if split is not None else subject
    plain = re.sub(r"\\[()\[\]]|\$|\x00\d+\x00", " ", subject)
    squashed = _squash(plain)
    singles = {s for s in target.symbols if re.fullmatch(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?", s)}
    for symbol in target.symbols:
        if symbol not in singles and symbol in squashed:
            return AnswerStrength.TARGET
    if math_only:
        return AnswerStrength.TARGET if squashed in singles else AnswerStrength.EXPRESSION
    if set(re.findall(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?", plain)) & singles:
        return AnswerStrength.TARGET
    if {_stem(w) for w in re.findall(r"[a-z][a-z'-]+", plain.lower())} & set(target.nouns):
        return AnswerStrength.TARGET
    return AnswerStrength.EXPRESSION


class IntermediateAnswerExtractor:
    """Reads the candidate answer of a thought from its last sentences."""

    def __init__(self, config: AnswerExtractorConfig | None = None) -> None:
        self._config = config or AnswerExtractorConfig()

    @property
    def config(self) -> AnswerExtractorConfig:
        return self._config

    def extract(
        self, text: str, *, target: QuestionTarget | None = None
    ) -> IntermediateAnswer | None:
        """Best candidate in the window: strongest grade, the latest one on ties."""
        sentences = split_sentences(text)
        start = max(len(sentences) - self._config.window_sentences, 0)
        best: IntermediateAnswer | None = None
        for at in range(start, len(sentences)):
            sentence = sentences[at]
            found = self.grade(sentence, target=target or QuestionTarget())
            pointer = _POINTER.match(sentence.strip()) if found is None and at > 0 else None
            if pointer is not None:
                found = self._pointed(
                    sentences[at - 1],
                    target or QuestionTarget(),
                    names_answer="answer" in pointer.group(0).lower(),
                )
            if found is not None and (best is None or found.strength >= best.strength):
                best = found
        return best

    def _pointed(
        self, previous: str, target: QuestionTarget, *, names_answer: bool
    ) -> IntermediateAnswer | None:
        """The result a pointer sentence ("I think that's the answer.") refers to: the value
        the previous sentence concludes with, stated by the pointer. "That's correct." / "That
        should be it." only vouch for the previous step (often a sub-result being checked): the
        value keeps its own grade."""
        found = self.grade(previous, target=target)
        if found is None:
            prose, spans = _protect_math(previous)
            if _HEDGE.search(prose):
                return None
            found = self._conclusion(prose, spans, target, previous)
        if found is None:
            return None
        prose, spans = _protect_math(previous)
        equals = list(_PLAIN_EQUALS.finditer(prose))
        last = _leading_value(prose[equals[-1].end() :], spans) if equals else None
        if last is not None:
            # "Which is 30*6=180 per day, 180*7=1,260. So that's the answer.": the last result.
            found = found.model_copy(update={"answer": _clean_answer(last)})
        strength = max(found.strength, AnswerStrength.STATED) if names_answer else found.strength
        return found.model_copy(update={"strength": strength, "cue": f"pointer+{found.cue}"})

    def confirms(self, text: str) -> bool:
        """Does the thought end by confirming the earlier answer without restating it?

        "Yes, that checks out." / "So, that confirms it." after a verification: the thought
        agrees with the previous answer. Doubt or negation ("that doesn't match", "maybe")
        disqualifies it.
        """
        tail = " ".join(split_sentences(text)[-self._config.confirmation_sentences :])
        return bool(_CONFIRMATION.search(tail)) and not _DOUBT.search(tail)

    def grade(self, sentence: str, *, target: QuestionTarget) -> IntermediateAnswer | None:
        """The candidate of one sentence, or None when it states no answer."""
        boxed = last_boxed(sentence) if "\\boxed" in sentence else None
        if boxed:
            return self._make(boxed, AnswerStrength.BOXED, "boxed", sentence)
        prose, spans = _protect_math(sentence)
        # "the answer is 1 + 2i, but perhaps I should check another way": the doubt is about
        # further work, not the answer; "..., but that can't be right" retracts it.
        but = _BUT_CLAUSE.search(prose)
        head, tail = (prose[: but.start()], prose[but.end() :]) if but else (prose, "")
        if _RETRACTION.search(tail) or _HEDGE.search(head) or "?" in prose:
            return None
        prose = head
        stated = _STATED_AFTER.search(prose)
        if (
            stated is not None
            and not _goes_on(stated.group("a"))
            and not _CONDITION.search(prose[: stated.start()])
        ):
            value = _leading_value(stated.group("a"), spans)
            made = self._make(value, AnswerStrength.STATED, "stated", sentence)
            if made is not None:
                return made
        stated = _STATED_BEFORE_P.search(prose)
        if stated is not None:
            before = prose[: stated.start()]
            # "I think 68 square feet is the correct answer.": the value before its unit words.
            unit = _UNIT_BEFORE.search(before)
            value = _trailing_value(before if unit is None else before[: unit.start()], spans)
            made = self._make(value, AnswerStrength.STATED, "stated-before", sentence)
            if made is not None:
                return made
        declared = _DECLARED_RIGHT.search(prose)
        if declared is not None:
            value = _trailing_value(prose[: declared.start()], spans)
            subject = _restore(prose[: declared.start()], spans)  # "So, n = 8"
            made = self._make(value, _subject_strength(subject, target), "declared-right", sentence)
            if made is not None:
                return made
        if not _CONCLUSION_CUE.search(prose):
            return None
        return self._conclusion(prose, spans, target, sentence)

    def _conclusion(
        self, prose: str, spans: list[str], target: QuestionTarget, sentence: str
    ) -> IntermediateAnswer | None:
        copulas = list(_COPULA.finditer(prose))
        if copulas:
            # "the perimeter is 6 times 7, which is 42": subject first, value after the last verb.
            last = copulas[-1]
            after = _ADVERB_START.sub("", prose[last.end() :])
            if _ROUNDED.search(prose):
                after = _APPROXIMATELY.sub("", after)
            value = _leading_value(after, spans)
            if value is not None:
                # "10% is the minimal rate because at 10%, the future value is 66,200": the
                # subject of the last verb is its own clause ("the future value").
                # "..., which is 42" restates the earlier clause: it keeps the whole subject.
                clause = _CLAUSE_BREAK.split(prose[: last.start()])[-1]
                if _RELATIVE.fullmatch(clause.strip()):
                    clause = prose[: last.start()]
                subject = _restore(clause, spans)
                strength = _subject_strength(subject, target)
                return self._make(value, strength, "subject-is", sentence)
        equals = list(_PLAIN_EQUALS.finditer(prose))
        if equals and not copulas:
            # "Thus, s = 96 / 8 = 12 cm." / "p(5) = -120/288 = -5/12": left of the first "=".
            value = _leading_value(prose[equals[-1].end() :], spans)
            if value is not None:
                subject = _restore(prose[: equals[0].start()], spans)
                strength = _subject_strength(subject, target)
                return self._make(value, strength, "plain-equation", sentence)
        if copulas:
            # "27 is the smallest such cube", "x = 5 is a valid solution": value first.
            first = copulas[0]
            after = prose[first.end() :]
            if _ARTICLE_START.match(after):
                raw = _trailing_value(prose[: first.start()], spans)
                strength = max(
                    _subject_strength(_restore(after, spans), target),
                    _subject_strength(raw or "", target, math_only=True),
                )
                made = self._make(raw, strength, "is-the", sentence)
                if made is not None:
                    return made
        there = _THERE_ARE.search(prose)
        if there is not None:
            value = _leading_value(there.group("rest"), spans)
            strength = _subject_strength(_restore(there.group("rest"), spans), target)
            made = self._make(value, strength, "there-are", sentence)
            if made is not None:
                return made
        ends = _ENDS_ON_VALUE.search(prose)
        if (
            ends is not None
            and not copulas
            and not equals
            and not _ARITHMETIC.search(prose[: ends.start()])
            and len(_NUMBER.findall(prose)) == 1
            and not _ADDS_UP.search(prose)
        ):
            subject = _restore(prose[: ends.start()], spans)
            strength = _subject_strength(subject, target)
            if not _someone_else(subject, target):
                strength = max(strength, _unit_strength(prose[ends.start() :], target))
            made = self._make(ends.group("v"), strength, "verb-value", sentence)
            if made is not None:
                return made
        # "... so \\( a = 3 \\)": the last equation in the sentence, subject on its left side.
        for span in reversed(spans):
            body = _math_body(span)
            if _split_equation(body) is not None:
                strength = _subject_strength(body, target, math_only=True)
                return self._make(body, strength, "equation", sentence)
        return None

    def _make(
        self, raw: str | None, strength: AnswerStrength, cue: str, sentence: str
    ) -> IntermediateAnswer | None:
        if raw is None:
            return None
        answer = _clean_answer(raw)
        if not answer or len(answer) > self._config.max_answer_chars:
            return None
        if _DANGLING.search(answer):  # "(1/2) *": the expression goes on past the sentence
            return None
        if strength < AnswerStrength.BOXED and len(answer.split()) > 8:
            return None
        return IntermediateAnswer(answer=answer, strength=strength, cue=cue, sentence=sentence)
