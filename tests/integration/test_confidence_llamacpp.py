"""DeepConf on a real llama.cpp server through the stock `openai` client: a branch is pruned
for low confidence and its engine slot is free within a second (`/slots`)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from integration.test_branches_llamacpp import MODEL, busy_slots, worker_url
from openai import OpenAI

from benchmarks.service import RunningService

pytestmark = pytest.mark.integration

HAIKU = [{"role": "user", "content": "Write a haiku about rain."}]
# Two finished branches set the threshold near the higher of their lowest 4-token confidences
# (prune_keep 0.01; the default 0.1 puts it at their 90th percentile); the others are pruned
# once a window falls below it. Haikus (~20 tokens, lengths differ by branch) carry no boxed
# answer, so the weighted-consensus stop never ends the request first.
CONFIDENCE = {"window": 4, "tail": 16, "warmup": 2, "tau": 1.0}
ALL_AT_ONCE = {**CONFIDENCE, "prune_keep": 0.01, "warmup_first": False}


def _slots_within(url: str, at_most: int, within_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if busy_slots(url) <= at_most:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{busy_slots(url)} slots busy > {at_most} after {within_s}s")


@pytest.mark.parametrize(
    "confidence", [ALL_AT_ONCE, CONFIDENCE], ids=["all-at-once", "defaults-warmup-first"]
)
def test_a_pruned_branch_frees_its_slot_at_once(
    cpu_service: RunningService, confidence: dict[str, Any]
) -> None:
    """Also with the defaults (DeepConf-online's order, the 90th-percentile threshold): the
    branches past the warm-up go to the engine as a job of their own once the warm-up has set
    the threshold (through the Ray pool actor)."""
    warmup_first = confidence.get("warmup_first", True)
    url = worker_url(cpu_service)
    client = OpenAI(base_url=f"{cpu_service.url}/v1", api_key="unused", max_retries=0)
    for seed in (1, 101, 201):
        tts = {
            "n_branches": 4,
            "seed": seed,
            "aggregation": "confidence",
            "early_stop": "confidence",
            "confidence": confidence,
        }
        stream = client.chat.completions.create(
            model=MODEL,
            messages=HAIKU,  # type: ignore[arg-type]
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"tts": tts},
        )
        freed_s: float | None = None
        final: dict[str, Any] = {}
        usage = None
        for chunk in stream:
            extra: dict[str, Any] = (chunk.model_extra or {}).get("tts") or {}
            progress = extra.get("progress")
            if progress and progress["pruned"] and freed_s is None:
                freed_s = _slots_within(url, progress["alive"], within_s=1.0)
            if chunk.choices and chunk.choices[0].finish_reason is not None:
                final = extra
            usage = chunk.usage or usage
        if freed_s is None:
            continue
        pruned = [b for b in final["branches"] if b["pruned"]]
        assert pruned
        assert all(b["abort_reason"].startswith("pruned:") for b in pruned)
        assert all(b["confidence"]["source"] == "top_k" for b in final["branches"])
        assert final["tokens"]["pruned"] == sum(b["tokens"] for b in pruned)
        assert final["confidence"]["warmup_first"] is warmup_first
        assert final["confidence"]["prune_keep"] == confidence.get("prune_keep", 0.1)
        if warmup_first:  # only branches started after the threshold existed are pruned
            assert all(b["index"] >= CONFIDENCE["warmup"] for b in pruned)
        assert usage is not None
        assert usage.completion_tokens_details is not None
        assert freed_s < 1.0
        return
    pytest.fail("no branch was pruned in three requests")
