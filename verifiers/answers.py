"""Final-answer extraction from the text a model writes after its thinking, and light cleanup.

`extract_final_answer` looks, in order of trust, for:

1. the last `\\boxed{...}` / `\\fbox{...}` (braces matched, escaped `\\{`/`\\}` ignored; the
   spaced form `\\boxed 5` too);
2. the last answer phrase: "the (final) answer is ...", "Answer: ...", "**Final Answer** ...";
3. the last multiple-choice phrase: "option (C)", "the correct choice is B".

A phrase answer that is only a choice letter ("(C)", "B.", "\\text{(D)} 12") is reduced to the
letter. Nothing parseable gives `None`, so a vote can tell "no answer" from any answer.

`normalize_answer` is a *meaning-preserving* cleanup used for cluster keys, display and the fast
path of the equivalence checker: two answers with the same normalised form must be equivalent.
It never lower-cases and never drops units, because either could merge different answers.
"""

from __future__ import annotations

import re

__all__ = [
    "extract_final_answer",
    "find_boxed",
    "last_boxed",
    "normalize_answer",
    "strip_math_delimiters",
    "strip_thinking",
]

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "**Final Answer**" / "**Final Answer:**" headings: the answer is the next paragraph.
_FINAL_HEADING = re.compile(r"\*\*\s*final\s+answer\s*:?\s*\*\*\s*:?", re.IGNORECASE)
# "the final answer is", "answer:", "Answer is:", optionally in bold.
_ANSWER_PHRASE = re.compile(
    r"\b(?:final\s+)?answer\s*(?:\*\*)?\s*(?:is\b\s*:?|:)\s*(?:\*\*)?", re.IGNORECASE
)
_CHOICE_PHRASE = re.compile(
    r"\b(?:option|choice)\s*(?:is\s*)?:?\s*(?:\\text\{\s*)?\(?([A-E])\)?(?![A-Za-z])",
    re.IGNORECASE,
)
_CHOICE_ONLY = re.compile(r"^(?:\\text(?:bf)?\{\s*)?\(?([A-E])\)?\s*\}?(?:[.):]|\s|$)")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n|,?\s+(?:because|since|which|where)\b", re.IGNORECASE)
_MAX_PHRASE_ANSWER = 200
_OPERATORS = frozenset("=+-*/^<>")
_PROSE_STARTS = frozenset(
    "not that to because the a an in as being also still clearly simply this it we".split()
)

_MATH_SPANS: tuple[tuple[str, str], ...] = (
    ("$$", "$$"),
    ("\\[", "\\]"),
    ("\\(", "\\)"),
    ("$", "$"),
)


def strip_thinking(
    text: str, *, open_marker: str = "<think>", close_marker: str = "</think>"
) -> str:
    """The text after the thinking block.

    After the last `close_marker` if there is one; `""` if the block was opened but never closed
    (a cut-off generation has no answer yet); the whole text when neither marker occurs (models
    that do not mark their thinking, or a prompt that already opened and the model never closed:
    the caller decides that case by passing the right markers).
    """
    at = text.rfind(close_marker)
    if at >= 0:
        return text[at + len(close_marker) :]
    if open_marker in text:
        return ""
    return text


def _match_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`, or -1. Backslash escapes the next char."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def find_boxed(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` / `\\fbox{...}` in order of appearance."""
    found: list[str] = []
    for m in _BOXED.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_brace(text, i)
            if end < 0:
                continue  # cut off inside the box
            content = text[i + 1 : end].strip()
        elif i > m.end():
            # `\boxed 5`: the argument is one token, up to whitespace or closing math.
            token = re.match(r"[^\s$]+", text[i:])
            content = token.group(0) if token else ""
        else:
            continue
        if content:
            found.append(content)
    return found


def last_boxed(text: str) -> str | None:
    """The last complete boxed answer, or None."""
    boxed = find_boxed(text)
    return boxed[-1] if boxed else None


def strip_math_delimiters(s: str) -> str:
    """Remove math delimiters around the whole string: `$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`."""
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_SPANS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                inner = s[len(left) : len(s) - len(right)].strip()
                if left == "$" and "$" in inner:
                    continue  # "$a$ and $b$" is two spans, not one
                s = inner
                changed = True
                break
    return s


def _leading_math(s: str) -> str | None:
    """Content of a math span the string starts with, if any."""
    for left, right in _MATH_SPANS:
        if s.startswith(left):
            end = s.find(right, len(left))
            if end > len(left):
                return s[len(left) : end].strip()
    return None


def _phrase_content(rest: str) -> str | None:
    rest = rest.lstrip()
    if not rest:
        return None
    boxed = find_boxed(rest[:_MAX_PHRASE_ANSWER])
    if boxed and rest.startswith(("\\boxed", "\\fbox", "$", "\\[", "\\(")):
        return boxed[0]
    math = _leading_math(rest)
    if math:
        return math
    end = _SENTENCE_END.search(rest)
    content = rest[: end.start()] if end else rest
    content = content.strip().rstrip(".,;:").strip()
    if not content or len(content) > _MAX_PHRASE_ANSWER or not _looks_like_answer(content):
        return None
    return strip_math_delimiters(content) or None


def _looks_like_answer(content: str) -> bool:
    """Reject prose after "the answer is" ("not obvious yet", "the sum of the roots")."""
    if any(ch.isdigit() for ch in content) or any(ch in content for ch in "\\$^_=+-*/()[]{}"):
        return True
    words = content.split()
    return len(words) == 1 or (len(words) <= 3 and words[0].lower() not in _PROSE_STARTS)


def _as_choice(answer: str) -> str:
    """Reduce "(C)", "B.", "\\text{(D)} 12" to the letter; keep "A + B" and "E = mc^2"."""
    m = _CHOICE_ONLY.match(answer)
    if m is None or answer[m.end() :].lstrip()[:1] in _OPERATORS:
        return answer
    return m.group(1)


def _phrase_answer(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in (_FINAL_HEADING, _ANSWER_PHRASE):
        for m in pattern.finditer(text):
            content = _phrase_content(text[m.end() :])
            if content is not None and (best is None or m.start() > best[0]):
                best = (m.start(), content)
    return None if best is None else _as_choice(best[1])


def extract_final_answer(text: str) -> str | None:
    """The final answer written in `text` (already stripped of thinking), or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    phrase = _phrase_answer(text)
    if phrase is not None:
        return phrase
    choices = _CHOICE_PHRASE.findall(text)
    if choices:
        return str(choices[-1]).upper()
    return None


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\s*\{")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])\s*\.?")
_DEGREES = re.compile(r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\degree(?![A-Za-z])|°)")
# `\\` (a row break) is matched first so that its second backslash is never read as `\ `.
_SPACING = re.compile(r"\\\\|\\[!,;: ]|\\q?quad(?![A-Za-z])|~|\\displaystyle(?![A-Za-z])")
_FRAC_FIRST = re.compile(r"\\([dt]?frac)\s*([0-9A-Za-z])")
_FRAC_SECOND = re.compile(r"\\frac(\{[^{}]*\})\s*([0-9A-Za-z])")
_SQRT_SHORT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_COMMAND_BEFORE = re.compile(r"\\[A-Za-z]+$")
_PAREN_LETTER = re.compile(r"^\(([A-Za-z])\)$")


def _unwrap_text(s: str) -> str:
    """Replace `\\text{X}`-style wrappers by X (brace-matched, innermost last)."""
    while True:
        m = _TEXT_WRAPPERS.search(s)
        if not m:
            return s
        open_at = m.end() - 1
        close_at = _match_brace(s, open_at)
        if close_at < 0:
            return s
        s = s[: m.start()] + s[open_at + 1 : close_at] + s[close_at + 1 :]


def _drop_spaces(s: str) -> str:
    """Remove whitespace, except where it ends a command name before a letter (`\\pi r`)."""
    out: list[str] = []
    last = 0
    for m in re.finditer(r"\s+", s):
        out.append(s[last : m.start()])
        after = s[m.end() : m.end() + 1]
        if after.isalpha() and _COMMAND_BEFORE.search(s[: m.start()]):
            out.append(" ")
        last = m.end()
    out.append(s[last:])
    return "".join(out)


def normalize_answer(s: str) -> str:
    """Meaning-preserving cleanup of an extracted answer (see the module docstring)."""
    s = strip_math_delimiters(s)
    whole_box = find_boxed(s)
    if len(whole_box) == 1 and _BOXED.match(s) and s.endswith("}"):
        s = whole_box[0]
    s = _unwrap_text(s)
    s = _FRAC_FIRST.sub(r"\\frac{\2}", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _FRAC_SECOND.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _LEFT_RIGHT.sub("", s)
    s = _DEGREES.sub("", s)
    s = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)
    s = s.replace("\\$", "")
    s = _drop_spaces(s.strip())
    s = s.rstrip(".") if not s.endswith("..") else s
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    paren = _PAREN_LETTER.match(s)
    if paren:
        s = paren.group(1)
    return s
