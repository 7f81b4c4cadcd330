"""Redis Streams as device streams: one stream per device, one consumer group, ack after use.

Each entry holds one wire message (``scadles.live.wire``) in the field ``d``. A source reads its
devices' streams as consumer ``consumer`` of group ``group`` (created at id 0 with MKSTREAM, so
nothing published before the consumer started is lost) and acknowledges an entry only once its
sample was trained or deliberately dropped. Entries handed out but not acknowledged stay in the
consumer's pending list on the server: a restarted consumer (same name) gets them again first,
and ``claim`` takes over those of a dead consumer with another name.

Delivery to the caller is exactly once per source while the server keeps its state (an AOF with
``appendfsync always`` survives a server crash): after a connection error the source re-reads its
pending list and hands out only entries it has not handed out yet. Publishing is at least once: a
connection lost after the server stored an XADD but before the reply makes the retry add it twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Self, TypeVar

import redis
import torch
from redis.backoff import NoBackoff
from redis.retry import Retry

from scadles.live.wire import decode_many

FIELD = b"d"
T = TypeVar("T")
Entry = tuple[str, bytes]  # (entry id, wire message)
_CONN_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def _client(url: str) -> redis.Redis:
    """Open a client that does not retry by itself (the callers below retry and recover)."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0)


def _retrying(call: Callable[[], T], reconnect_s: float, on_error: Callable[[], None]) -> T:
    """Run ``call``, retrying connection errors with backoff for up to ``reconnect_s`` seconds."""
    deadline = time.monotonic() + reconnect_s
    delay = 0.02
    while True:
        try:
            return call()
        except _CONN_ERRORS:
            on_error()
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """Return the (id, fields) list of a one-stream XREADGROUP reply (RESP2), [] when empty."""
    return list(reply[0][1]) if reply else []


class RedisSink:
    """Publish wire messages to Redis streams (XADD)."""

    def __init__(self, url: str, *, reconnect_s: float = 10.0) -> None:
        self._r = _client(url)
        self._reconnect_s = reconnect_s

    def publish(self, stream: str, data: bytes) -> str:
        """Append one message to ``stream``; return its entry id."""
        entry_id = _retrying(
            lambda: self._r.xadd(stream, {FIELD: data}), self._reconnect_s, lambda: None
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def flush(self, timeout_s: float = 10.0) -> int:
        """Return 0: every publish is already on the server when it returns."""
        return 0

    def stream_length(self, stream: str) -> int:
        """Return how many entries ``stream`` holds (XLEN)."""
        return int(_retrying(lambda: self._r.xlen(stream), self._reconnect_s, lambda: None))

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()

    def __enter__(self) -> Self:
        """Return self, closed on leaving the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()


class RedisSource:
    """Read one Redis stream per device as one consumer of a consumer group."""

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        group: str,
        consumer: str,
        max_bytes: int,
        shape: tuple[int, ...] | None,
        *,
        num_classes: int | None = None,
        reconnect_s: float = 10.0,
    ) -> None:
        self._r = _client(url)
        self.streams = list(streams)
        self.group, self.consumer = group, consumer
        self.max_bytes, self.shape, self.num_classes = max_bytes, shape, num_classes
        self._reconnect_s = reconnect_s
        self._cursor = ["0"] * len(self.streams)  # position in our own pending list
        self._recovering = [True] * len(self.streams)  # re-read the pending list first
        self._inflight: list[set[str]] = [set() for _ in self.streams]  # handed out, not acked
        self.skipped: Counter[str] = Counter()  # entries acked without use, by reason
        self._call(self._create_groups)

    def _create_groups(self) -> None:
        """Create the group on every stream at id 0 (MKSTREAM) unless it exists."""
        for stream in self.streams:
            try:
                self._r.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    def _lost_connection(self) -> None:
        """Re-read every pending list after a connection error (a reply may have been lost)."""
        self._recovering = [True] * len(self.streams)
        self._cursor = ["0"] * len(self.streams)

    def _call(self, call: Callable[[], T]) -> T:
        """Run a command with reconnects; recreate lost groups (a server restarted empty)."""
        try:
            return _retrying(call, self._reconnect_s, self._lost_connection)
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            _retrying(self._create_groups, self._reconnect_s, self._lost_connection)
            return _retrying(call, self._reconnect_s, self._lost_connection)

    def _keep(self, device: int, raw: list[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Entry]:
        """Hand out entries not handed out before; ack entries deleted from the stream."""
        out: list[Entry] = []
        gone: list[str] = []
        for raw_id, fields in raw:
            entry_id = raw_id.decode()
            data = fields.get(FIELD) if fields else None
            if data is None:
                gone.append(entry_id)
            elif entry_id not in self._inflight[device]:
                self._inflight[device].add(entry_id)
                out.append((entry_id, data))
        if gone:
            self.skipped["deleted"] += len(gone)
            self._call(lambda: self._r.xack(self.streams[device], self.group, *gone))
        return out

    def _read(self, device: int, start: str, count: int, block_ms: int | None) -> Any:
        """XREADGROUP ``count`` entries of one device's stream from ``start``."""
        streams: dict[Any, Any] = {self.streams[device]: start}
        return self._r.xreadgroup(self.group, self.consumer, streams, count=count, block=block_ms)

    def pending(self, device: int, count: int = 1000) -> list[Entry]:
        """Return up to ``count`` entries delivered to this consumer earlier and never acked."""
        out: list[Entry] = []
        while self._recovering[device] and len(out) < count:
            start, want = self._cursor[device], count - len(out)
            raw = _entries(self._call(partial(self._read, device, start, want, None)))
            if not raw:
                self._recovering[device] = False
                break
            self._cursor[device] = raw[-1][0].decode()
            out += self._keep(device, raw)
        return out

    def claim(self, device: int, min_idle_ms: int, count: int = 1000) -> list[Entry]:
        """Take over up to ``count`` entries other consumers left un-acked for ``min_idle_ms``."""
        stream = self.streams[device]
        reply = self._call(
            lambda: self._r.xautoclaim(stream, self.group, self.consumer, min_idle_ms, count=count)
        )
        return self._keep(device, [(i, f) for i, f in reply[1] if f is not None])

    def poll(self, max_per_device: Sequence[int], block_ms: int = 0) -> list[list[Entry]]:
        """Return up to ``max_per_device[i]`` entries per device; block until one if none waits."""
        if len(max_per_device) != len(self.streams):
            raise ValueError(
                f"max_per_device has {len(max_per_device)} entries, need {len(self.streams)}"
            )
        out = [self.pending(d, n) if n > 0 else [] for d, n in enumerate(max_per_device)]
        self._read_new(out, max_per_device, None)
        if block_ms > 0 and not any(out):
            self._read_new(out, max_per_device, block_ms)
            self._read_new(out, max_per_device, None)
        return out

    def _read_new(self, out: list[list[Entry]], limit: Sequence[int], block_ms: int | None) -> None:
        """Append new entries (id ">") to ``out`` up to ``limit``; wait ``block_ms`` for a first."""
        need = {d: n - len(out[d]) for d, n in enumerate(limit) if n > len(out[d])}
        if not need:
            return
        if block_ms is not None:  # one blocking read over all hungry streams, one entry each
            streams: dict[Any, Any] = {self.streams[d]: ">" for d in need}
            reply: Any = self._call(
                lambda: self._r.xreadgroup(
                    self.group, self.consumer, streams, count=1, block=block_ms
                )
            )
            index = {name: d for d, name in enumerate(self.streams)}
            for name, raw in reply or []:
                d = index[name.decode() if isinstance(name, bytes) else name]
                out[d] += self._keep(d, list(raw))
            return
        for d, n in need.items():
            out[d] += self._keep(d, _entries(self._call(partial(self._read, d, ">", n, None))))

    def ack(self, device: int, ids: Sequence[str]) -> int:
        """Acknowledge entries whose samples were trained or dropped; return the count acked."""
        if not ids:
            return 0
        self._inflight[device].difference_update(ids)
        return int(self._call(lambda: self._r.xack(self.streams[device], self.group, *ids)))

    def decode(self, entries: Sequence[Entry]) -> tuple[torch.Tensor, torch.Tensor, Counter[str]]:
        """Decode entries into (x (n, *shape), y (n,), skipped by reason); never raises."""
        return decode_many(
            (data for _, data in entries),
            max_bytes=self.max_bytes,
            expect_shape=self.shape,
            num_classes=self.num_classes,
        )

    def pending_count(self, device: int) -> int:
        """Return how many entries of the device's stream the group has delivered but not acked."""
        info = self._call(lambda: self._r.xpending(self.streams[device], self.group))
        return int(info["pending"])

    def stream_length(self, stream: str) -> int:
        """Return how many entries ``stream`` holds (XLEN)."""
        return int(self._call(lambda: self._r.xlen(stream)))

    def close(self) -> None:
        """Close the connection pool (un-acked entries stay pending on the server)."""
        self._r.close()

    def __enter__(self) -> Self:
        """Return self, closed on leaving the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()
