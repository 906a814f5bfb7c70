"""A request's life through the real route: deadlines, the latency budget's best-so-far answer,
cancel, client disconnect, failing workers, and every engine slot freed at the end."""

from __future__ import annotations

import asyncio

from unit.request.harness import MODEL, Branch, branches, service, until

FIVE = "So the answer is \\boxed{5}."
SEVEN = "So the answer is \\boxed{7}."
ENDLESS = Branch("word " * 5000, delay_s=0.01)


async def test_the_server_deadline_fails_the_request_with_504_and_frees_slots() -> None:
    async with service(branches(ENDLESS), server={"request_timeout_s": 0.2}).run() as svc:
        r = await svc.chat()
        assert r.status_code == 504, r.text
        assert r.json()["error"]["type"] == "timeout_error"
        assert svc.worker.busy == 0
        record = await svc.record(svc.worker.requests[0][0].rsplit("/", 1)[0])
        assert record["status"] == "failed"


async def test_the_latency_budget_answers_with_the_best_vote_so_far() -> None:
    async with service(branches(FIVE, Branch(SEVEN, delay_s=0.01), ENDLESS)).run() as svc:
        r = await svc.chat(tts={"seed": 0, "n_branches": 3, "latency_budget_s": 0.3})
        body = r.json()
        assert r.status_code == 200, body
        assert body["tts"]["budget_reached"] is True
        assert body["tts"]["vote"]["winner"] == "5"
        assert body["choices"][0]["message"]["content"] == FIVE
        assert svc.worker.busy == 0


async def test_a_budget_reached_before_any_answer_finishes_with_length() -> None:
    async with service(branches(ENDLESS, ENDLESS)).run() as svc:
        body = (await svc.chat(tts={"seed": 0, "n_branches": 2, "latency_budget_s": 0.1})).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["tts"]["vote"]["winner"] is None


async def test_a_single_branch_under_a_budget_returns_its_partial_text() -> None:
    async with service(branches(ENDLESS)).run() as svc:
        body = (await svc.chat(tts={"latency_budget_s": 0.1})).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["choices"][0]["message"]["content"].startswith("word")


async def test_delete_cancels_a_running_request_from_the_api() -> None:
    async with service(branches(ENDLESS, ENDLESS)).run() as svc:
        task = asyncio.create_task(svc.chat(tts={"seed": 0, "n_branches": 2}))
        orchestrator = svc.services.orchestrator
        await until(lambda: svc.worker.busy == 2)
        [request_id] = list(orchestrator._running)
        r = await svc.client.delete(f"/v1/requests/{request_id}")
        assert r.status_code == 200
        assert r.json()["cancelled"] is True
        response = await task
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "cancelled"
        await until(lambda: svc.worker.busy == 0)
        assert (await svc.record(request_id))["status"] == "cancelled"


async def test_a_client_disconnect_aborts_every_branch() -> None:
    async with service(branches(ENDLESS, ENDLESS, ENDLESS)).run() as svc:
        call, gone, sent = svc.streaming_call(tts={"seed": 0, "n_branches": 3})
        await until(lambda: svc.worker.busy == 3)
        gone.set()
        await asyncio.wait_for(call, 2.0)
        await until(lambda: svc.worker.busy == 0)
        assert len(svc.worker.aborted) == 3
        assert sent[0]["status"] == 200


async def test_a_failing_worker_fails_a_single_branch_request_with_502() -> None:
    async with service(branches(Branch(FIVE, fail_after=2))).run() as svc:
        r = await svc.chat()
        assert r.status_code == 502, r.text
        assert r.json()["error"]["type"] == "worker_error"


async def test_a_failing_branch_does_not_take_the_vote_down() -> None:
    slow_five = Branch(FIVE, delay_s=0.005)
    async with service(branches(slow_five, Branch(SEVEN, fail_after=1), slow_five)).run() as svc:
        body = (await svc.chat(tts={"seed": 0, "n_branches": 3})).json()
        assert body["tts"]["vote"]["winner"] == "5"
        failed = [b for b in body["tts"]["branches"] if "failed" in (b["abort_reason"] or "")]
        assert [b["index"] for b in failed] == [1], body["tts"]["branches"]


async def test_a_stream_that_fails_ends_with_an_error_event_then_done() -> None:
    async with service(branches(Branch(FIVE, fail_after=2))).run() as svc:
        events = await svc.stream()
        assert events[-1]["error"]["type"] == "worker_error"


async def test_an_unknown_model_or_pool_is_a_clean_error_and_runs_nothing() -> None:
    async with service(branches(FIVE)).run() as svc:
        r = await svc.client.post(
            "/v1/chat/completions",
            json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"
        r = await svc.chat(tts={"pool": "nope"})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "tts.pool"
        assert svc.worker.requests == []


async def test_completions_endpoint_runs_the_same_path() -> None:
    async with service(branches(FIVE, FIVE)).run() as svc:
        r = await svc.client.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "2+3=", "tts": {"seed": 0, "n_branches": 2}},
        )
        body = r.json()
        assert r.status_code == 200, body
        assert body["choices"][0]["text"] == FIVE
        assert svc.worker.requests[0][1] == "2+3="


async def test_shutdown_cancels_what_still_runs() -> None:
    async with service(branches(ENDLESS)).run() as svc:
        task = asyncio.create_task(svc.chat())
        await until(lambda: svc.worker.busy == 1)
        await svc.services.orchestrator.shutdown(grace_s=0.0)
        r = await task
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "cancelled"
        r = await svc.chat()
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "shutting_down"
