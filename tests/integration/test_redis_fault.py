"""Kill -9 the embedded Redis under load on the real service (API, Ray, replay engine, keys on),
then restart the service on the same data dir: the code path of ``benchmarks.redis_fault``.

In-flight requests end cleanly (complete, or an OpenAI error: a 503 or an SSE error event then
[DONE]; never a hang or a broken stream), new requests are served within 5 s, the dead server is
reaped and replaced on its port, an API key made before still works, and no request record
written before the last fsync is lost - after the kill and after a service restart.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.load import Outcome
from benchmarks.redis_fault import FSYNC_MARGIN_S, run_all

pytestmark = pytest.mark.integration


async def test_kill_9_of_the_embedded_redis_under_load(tmp_path: Path) -> None:
    for sub in ("first", "second"):
        (tmp_path / sub).mkdir()
    args = argparse.Namespace(concurrency=6, before_s=4.0, after_s=6.0, rate=200.0, max_tokens=160)
    run = await run_all(args, tmp_path)

    outcomes = Counter(t.result.outcome for t in run.requests)
    assert outcomes[Outcome.HUNG] == outcomes[Outcome.FAILED_OTHERWISE] == 0, [
        t.result.detail for t in run.requests if t.result.outcome is not Outcome.COMPLETED
    ]
    assert len(run.in_flight) >= args.concurrency - 1  # closed loop: nearly all were mid-request
    first = run.first_served_after_kill()
    assert first is not None, first
    assert first.ended_s < 5.0, first
    assert run.health["restarts"] == 1
    assert run.health["last_exit"] == "killed by SIGKILL"
    assert run.health["pid"] != run.killed_pid
    assert run.health["running"]
    assert run.health["last_down_s"] < 2.0
    assert run.killed_reaped
    assert run.durable_ids, f"no request completed {FSYNC_MARGIN_S} s before the kill"
    assert run.after_kill.key_status == 200
    assert run.after_kill.records_found == run.after_kill.records_checked
    assert run.after_restart is not None
    assert run.after_restart.key_status == 200
    assert run.after_restart.records_found == run.after_restart.records_checked
