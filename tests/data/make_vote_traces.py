"""Write tests/data/vote_traces.jsonl: hand-made (synthetic) traces for vote tests.

They are not model outputs: each problem has branches with a chosen answer and thinking length,
so finish order and vote outcomes are known. `python tests/data/make_vote_traces.py` rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path

FILLER = "Let me check this step carefully once more. "


def trace(problem: str, idx: int, answer: str, words: int) -> dict[str, object]:
    thinking = "Okay, let me think.\n\n" + FILLER * (words // 8)
    tail = f"The answer is \\boxed{{{answer}}}." if answer else "I am not sure what the answer is."
    return {
        "id": f"synthetic/{problem}:{idx}",
        "dataset": "synthetic",
        "model": f"synthetic-{idx}",
        "problem": problem,
        "ground_truth": "1/2",
        "output": f"<think>{thinking}</think>\n\n{tail}",
        "final_answer": answer,
        "is_correct": True,
        "thinking_delimiters": ["<think>", "</think>"],
        "prompt_ends_with_think_tag": False,
        "has_thinking_end": True,
        "complete": True,
        "notes": "synthetic test fixture, not a model output",
    }


CASES = {
    # problem: [(answer, thinking words)] in seed order (branch i gets seed base+i)
    "VOTE-EQUIV: what is one half?": [("\\frac{1}{2}", 20), ("0.5", 40), ("3", 60), ("", 80)],
    "VOTE-TIE: pick a number.": [("4", 20), ("5", 60)],
    "VOTE-UNPARSEABLE: what is seven?": [("", 10), ("", 20), ("7", 80)],
    "VOTE-AGREE: what is nine?": [("9", 20), ("9", 30), ("9", 40), ("10", 900), ("10", 900)],
    "VOTE-DISAGREE: what is ten?": [("9", 20), ("10", 30), ("9", 40), ("10", 50), ("11", 60)],
    "VOTE-SLOW: what is eight?": [("8", 20), ("8", 2000), ("6", 2000), ("8", 2000)],
}


def main() -> None:
    out = Path(__file__).with_name("vote_traces.jsonl")
    with out.open("w") as f:
        for problem, branches in CASES.items():
            for i, (answer, words) in enumerate(branches):
                f.write(json.dumps(trace(problem, i, answer, words)) + "\n")


if __name__ == "__main__":
    main()
