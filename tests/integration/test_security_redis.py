"""API keys and per-key limits against a real redis-server (EmbeddedRedis).

Two limiter (or key store) instances on separate clients of one server stand in for two API
replicas. The HTTP side (401 / 429, streaming leases, logs) is in test_security_http.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from integration.security_support import PEPPER, UNLIMITED, make_store
from redis.asyncio import Redis
from typer.testing import CliRunner

from tts_orchestrator.config.security import KeyLimits
from tts_orchestrator.security.cli import keys_app
from tts_orchestrator.security.errors import (
    AuthenticationError,
    KeyNotFound,
    LimitKind,
    RateLimited,
)
from tts_orchestrator.security.keys import ApiKeyStore, KeyHasher, SecurityKeySchema
from tts_orchestrator.security.limits import Limiter, utc_day

pytestmark = pytest.mark.integration


async def _dump(client: Any) -> list[str]:
    """Every key name and every stored value on the server, as text."""
    out: list[str] = []
    async for name in client.scan_iter(count=1000):
        out.append(name)
        kind = await client.type(name)
        if kind == "hash":
            out += [f"{k}={v}" for k, v in (await client.hgetall(name)).items()]
        elif kind == "zset":
            out += [f"{m}={s}" for m, s in await client.zrange(name, 0, -1, withscores=True)]
        elif kind == "string":
            out.append(str(await client.get(name)))
        else:
            raise AssertionError(f"unexpected {kind} at {name}")
    return out


# --- keys ------------------------------------------------------------------------------------


async def test_keys_are_hashed_at_rest(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    client = clients[0]
    store = make_store(client, schema)
    limiter = Limiter(client, keys=schema)
    issued = [
        await store.create(f"user-{i}", limits=KeyLimits(daily_tokens=1000)) for i in range(3)
    ]
    for key in issued:  # fill the limiter's keys too
        lease = await limiter.admit(key.record.id, key.record.limits)
        await limiter.charge(key.record.id, 7)
        assert lease is not None
        await lease.release()
    stored = await _dump(client)
    assert len([s for s in stored if s.startswith(schema.base.prefix)]) >= 3 * 3
    text = "\n".join(stored)
    for key in issued:
        assert key.secret not in text
        assert key.secret[4:] not in text
        assert key.secret[4:20] not in text  # not even a fragment
        assert schema.record(KeyHasher(PEPPER).digest(key.secret)) in stored
        assert await store.verify(key.secret) == key.record


async def test_a_key_only_verifies_under_its_pepper(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    issued = await make_store(clients[0], schema).create("ci", limits=UNLIMITED)
    assert (await make_store(clients[1], schema).verify(issued.secret)).id == issued.record.id
    for other in (None, "another-pepper"):
        with pytest.raises(AuthenticationError) as info:
            await make_store(clients[1], schema, other).verify(issued.secret)
        assert info.value.code == "invalid_api_key"


async def test_revoked_keys_stop_verifying_everywhere(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    replica_a, replica_b = make_store(clients[0], schema), make_store(clients[1], schema)
    keep = await replica_a.create("keep", limits=UNLIMITED)
    drop = await replica_a.create("drop", limits=UNLIMITED)
    revoked = await replica_a.revoke(drop.record.id)
    assert revoked.revoked
    assert revoked.revoked_at is not None
    again = await replica_b.revoke(drop.record.id)
    assert again.revoked_at == revoked.revoked_at  # idempotent: the first time is kept
    with pytest.raises(AuthenticationError) as info:
        await replica_b.verify(drop.secret)
    assert (info.value.status_code, info.value.code) == (401, "revoked_api_key")
    assert (await replica_b.verify(keep.secret)).id == keep.record.id
    listed = {r.id: r.revoked for r in await replica_b.list()}
    assert listed == {keep.record.id: False, drop.record.id: True}
    for unknown in ("key_ffffffffffffffff", "not-an-id"):
        with pytest.raises(KeyNotFound):
            await replica_a.revoke(unknown)


# --- limits ----------------------------------------------------------------------------------


async def test_rate_limit_is_shared_by_replicas_and_slides(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    window_s = 1.0
    replicas = [Limiter(c, keys=schema, window_s=window_s) for c in clients]
    limits = KeyLimits(requests_per_minute=4, max_concurrent=None)
    for i in range(4):
        assert await replicas[i % 2].admit("key_a", limits) is None
    for replica in replicas:
        with pytest.raises(RateLimited) as info:
            await replica.admit("key_a", limits)
        assert info.value.kind is LimitKind.RATE
        assert 0 < info.value.retry_after_s <= window_s
        assert info.value.status_code == 429
    assert await replicas[0].admit("key_b", limits) is None  # other keys are unaffected
    await asyncio.sleep(window_s + 0.05)
    assert await replicas[1].admit("key_a", limits) is None


async def test_a_refused_request_consumes_no_rate(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    limiter = Limiter(clients[0], keys=schema)
    limits = KeyLimits(requests_per_minute=2, max_concurrent=1)
    held = await limiter.admit("key_a", limits)
    assert held is not None
    for _ in range(3):
        with pytest.raises(RateLimited) as info:
            await limiter.admit("key_a", limits)
        assert info.value.kind is LimitKind.CONCURRENCY
    await held.release()
    second = await limiter.admit("key_a", limits)  # the 2nd of 2 per minute
    assert second is not None
    await second.release()


async def test_concurrency_leases_are_released_across_replicas(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    replicas = [Limiter(c, keys=schema) for c in clients]
    limits = KeyLimits(requests_per_minute=None, max_concurrent=2)
    first = await replicas[0].admit("key_a", limits)
    second = await replicas[1].admit("key_a", limits)
    assert first is not None
    assert second is not None
    with pytest.raises(RateLimited) as info:
        await replicas[0].admit("key_a", limits)
    assert info.value.kind is LimitKind.CONCURRENCY
    assert info.value.headers()["Retry-After"] == "1"
    assert await replicas[0].in_flight("key_a") == 2
    await second.release()
    await second.release()  # idempotent
    third = await replicas[0].admit("key_a", limits)
    assert third is not None
    for lease in (first, third):
        await lease.release()
    assert await replicas[1].in_flight("key_a") == 0


async def test_the_lease_of_a_dead_replica_expires(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    ttl_s = 0.3
    dead, live = (Limiter(c, keys=schema, lease_ttl_s=ttl_s) for c in clients)
    limits = KeyLimits(requests_per_minute=None, max_concurrent=1)
    lease = await dead.admit("key_a", limits)
    assert lease is not None
    await dead.aclose()  # the replica went away: its leases are neither renewed nor released
    with pytest.raises(RateLimited):
        await live.admit("key_a", limits)
    await asyncio.sleep(ttl_s + 0.1)
    taken = await live.admit("key_a", limits)
    assert taken is not None
    await taken.release()


async def test_a_live_request_keeps_its_lease_past_the_ttl(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    ttl_s = 0.5
    holder, other = (Limiter(c, keys=schema, lease_ttl_s=ttl_s) for c in clients)
    limits = KeyLimits(requests_per_minute=None, max_concurrent=1)
    lease = await holder.admit("key_a", limits)
    assert lease is not None
    for _ in range(4):  # 4 x 0.4 s > 3 TTLs
        await asyncio.sleep(0.4)
        with pytest.raises(RateLimited):
            await other.admit("key_a", limits)
    await lease.release()
    taken = await other.admit("key_a", limits)
    assert taken is not None
    await taken.release()


async def test_token_budget_is_charged_after_requests_and_resets_daily(
    clients: tuple[Redis, Redis], schema: SecurityKeySchema
) -> None:
    now = [1_800_000_000.0]
    replicas = [Limiter(c, keys=schema, clock=lambda: now[0]) for c in clients]
    limits = KeyLimits(requests_per_minute=None, max_concurrent=None, daily_tokens=100)
    await replicas[0].admit("key_a", limits)
    await replicas[0].charge("key_a", 60)
    await replicas[1].admit("key_a", limits)  # 60 < 100: admitted
    await replicas[1].charge("key_a", 50)  # the request that crosses the budget completes
    assert await replicas[0].spent_today("key_a") == 110
    with pytest.raises(RateLimited) as info:
        await replicas[0].admit("key_a", limits)
    assert info.value.kind is LimitKind.TOKEN_BUDGET
    assert info.value.retry_after_s == pytest.approx(utc_day(now[0])[1], abs=0.01)
    key = schema.tokens("key_a", utc_day(now[0])[0])
    assert 0 < await clients[0].ttl(key) <= 2 * 86400
    now[0] += utc_day(now[0])[1] + 1  # the next UTC day
    assert await replicas[1].spent_today("key_a") == 0
    await replicas[1].admit("key_a", limits)


# --- CLI -------------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(keys_app, list(args))


async def test_cli_creates_lists_and_revokes_keys(
    redis_url: str, clients: tuple[Redis, Redis]
) -> None:
    made = await asyncio.to_thread(
        _cli,
        "create",
        "--name",
        "ci bot",
        "--rpm",
        "5",
        "--daily-tokens",
        "0",
        "--redis-url",
        redis_url,
    )
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    key_id = made.stderr.split()[1]
    store = ApiKeyStore(clients[0], hasher=KeyHasher(), keys=SecurityKeySchema())
    record = await store.verify(secret)
    assert record.id == key_id
    assert record.name == "ci bot"
    assert record.limits.requests_per_minute == 5
    assert record.limits.daily_tokens is None
    assert record.limits.max_concurrent == KeyLimits().max_concurrent  # the default
    listed = await asyncio.to_thread(_cli, "list", "--redis-url", redis_url)
    digest = KeyHasher().digest(secret)
    assert key_id in listed.stdout
    assert "active" in listed.stdout
    assert secret[4:] not in listed.output
    assert digest not in listed.output
    gone = await asyncio.to_thread(_cli, "revoke", key_id, "--redis-url", redis_url)
    assert gone.exit_code == 0
    assert f"revoked {key_id}" in gone.stdout
    rows = await asyncio.to_thread(_cli, "list", "--json", "--redis-url", redis_url)
    assert json.loads(rows.stdout.splitlines()[0])["revoked_at"] is not None
    with pytest.raises(AuthenticationError):
        await store.verify(secret)
    missing = await asyncio.to_thread(
        _cli, "revoke", "key_ffffffffffffffff", "--redis-url", redis_url
    )
    assert missing.exit_code == 1
    assert "no API key" in missing.stderr


async def test_cli_without_a_url_keeps_keys_in_the_configured_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"redis": {"data_dir": str(tmp_path / "redis")}}))
    made = await asyncio.to_thread(_cli, "create", "--name", "offline", "-c", str(config))
    assert made.exit_code == 0, made.output
    assert (tmp_path / "redis" / "appendonly.aof").stat().st_size > 0  # on disk, not in memory
    listed = await asyncio.to_thread(_cli, "list", "--json", "-c", str(config))
    assert [json.loads(row)["name"] for row in listed.stdout.splitlines()] == ["offline"]
    result = await asyncio.to_thread(
        _cli, "create", "--name", "bad\nname", "--redis-url", "redis://x"
    )
    assert result.exit_code == 1
    assert "invalid --name" in result.stderr
