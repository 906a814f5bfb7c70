"""The embedded redis-server: supervised (a killed server is back on its port within 2 s, the
dead child reaped) and persistent (an append-only file, fsync every second, in its data dir)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tts_orchestrator.exceptions import StateUnavailable
from tts_orchestrator.state.embedded import DataDirBusy, EmbeddedRedis, reach_data_dir

pytestmark = pytest.mark.integration


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def _wait_for_new_pid(server: EmbeddedRedis, old: int, within_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if server.pid not in (None, old) and server.running and server.restarts:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"not restarted within {within_s}s: {server.status()}")


async def test_a_killed_server_is_back_on_its_port_with_its_data(tmp_path: Path) -> None:
    async with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        client = Redis.from_url(server.url, decode_responses=True)
        await client.set("kept", "yes")
        await asyncio.sleep(1.5)  # past the next everysec fsync
        port, victim = server.port, server.pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        took = await _wait_for_new_pid(server, victim, within_s=2.0)
        assert took < 2.0
        assert not _exists(victim)  # reaped: not even a zombie is left
        assert server.port == port
        assert await client.get("kept") == "yes"  # the client reconnects to the same URL
        status = server.status()
        assert status["restarts"] == 1
        assert status["last_exit"] == "killed by SIGKILL"
        assert status["persistent"]
        assert status["pid"] == server.pid
        await client.aclose()


async def test_a_deliberate_stop_is_not_undone(tmp_path: Path) -> None:
    async with EmbeddedRedis() as server:
        victim = server.pid
        await server.stop(kill=True)
        await asyncio.sleep(0.5)
        assert not server.running
        assert server.restarts == 0
        assert victim is not None
        assert _is_zombie_or_gone(victim)
        assert not _exists(victim)


async def test_data_survive_a_restart_of_the_owner(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    async with EmbeddedRedis(data_dir=data) as server:
        client = Redis.from_url(server.url, decode_responses=True)
        await client.set("k", "1")
        await client.aclose()
    assert (data / "appendonly.aof").stat().st_size > 0
    async with EmbeddedRedis(data_dir=data) as again:
        client = Redis.from_url(again.url, decode_responses=True)
        assert await client.get("k") == "1"
        await client.aclose()


async def test_throw_away_servers_keep_nothing() -> None:
    async with EmbeddedRedis() as server:
        workdir = server.workdir
        assert workdir is not None
        assert not server.persistent
        client = Redis.from_url(server.url, decode_responses=True)
        assert await client.config_get("appendonly") == {"appendonly": "no"}
        await client.aclose()
    assert not workdir.exists()


async def test_one_owner_per_data_dir_and_the_cli_reaches_it(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    async with EmbeddedRedis(data_dir=data) as owner:
        with pytest.raises(DataDirBusy, match="in use"):
            async with EmbeddedRedis(data_dir=data):
                pass
        async with reach_data_dir(data) as url:
            assert url == owner.url  # the running server, not a second one on the same file
            client = Redis.from_url(url, decode_responses=True)
            await client.set("via-owner", "1")
            await client.aclose()
    async with reach_data_dir(data) as url:  # the owner is gone: the directory is opened
        client = Redis.from_url(url, decode_responses=True)
        assert await client.get("via-owner") == "1"
        await client.aclose()


async def test_an_owner_whose_server_never_answers_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    import fcntl

    with (data / "lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(StateUnavailable, match="does not answer"):
            async with reach_data_dir(data, wait_s=0.3):
                pass
