from __future__ import annotations

from unit.request.harness import service


async def test_one_branch_answers_through_the_real_route() -> None:
    async with service(["The answer is \\boxed{5}."]).run() as svc:
        r = await svc.chat()
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == "The answer is \\boxed{5}."
        rec = await svc.record(body["id"])
        assert rec["status"] == "finished"
