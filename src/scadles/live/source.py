"""One consumer interface over the three live sources: in-process replay, Kafka and Redis.

The real-mode trainer polls its devices' streams, trains on what arrived and tells the source
which samples it is done with (trained, or dropped on purpose). What "done" and "positions" mean
per broker (docs/WIRE.md):

    source  | done(ids)        | positions()                  | broker_count(d)
    replay  | nothing          | samples handed out per stream | samples emitted
    kafka   | nothing          | next offset per topic         | high watermark of partition 0
    redis   | XACK             | {} (un-acked are re-delivered) | XLEN

Corrupt messages are skipped and counted by reason (``scadles.live.wire.REASONS``); on Redis they
are acknowledged at once, so they never come back. Broker modules are imported only when used.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from scadles.data.rates import RateSchedule
from scadles.errors import UserError
from scadles.live.wire import decode_valid

if TYPE_CHECKING:
    from scadles.live.kafka_stream import KafkaSource
    from scadles.live.redis_stream import RedisSource

_LOG = logging.getLogger(__name__)
KINDS = ("replay", "kafka", "redis")
DEFAULT_PREFIX = "scadles-device"
Replay = tuple[list[tuple[torch.Tensor, torch.Tensor]], RateSchedule, int]  # parts, rates, seed


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one poll gave one device."""

    x: torch.Tensor  # (n, *shape) decoded valid samples
    y: torch.Tensor  # (n,)
    ids: list[str]  # broker ids of the valid samples, aligned with the rows of x (for done)
    skipped: int  # messages skipped as invalid in this poll (already acknowledged/consumed)


class LiveSource(Protocol):
    """Per-device live streams, polled by the real-mode trainer."""

    devices: int

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Return up to ``want[d]`` samples per device; wait up to ``timeout_s`` for one."""
        ...

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Mark samples as trained or dropped on purpose (Redis: XACK)."""
        ...

    def positions(self) -> dict[str, int]:
        """Return the positions a restarted source resumes from."""
        ...

    def broker_count(self, device: int) -> int:
        """Return the broker's own count of messages in the device's stream."""
        ...

    def skipped(self) -> dict[str, int]:
        """Return the messages skipped so far, by reason."""
        ...

    def close(self) -> None:
        """Release the connections (or stop the producer threads)."""
        ...


def stream_names(devices: Sequence[int], prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Return the stream (topic) name of each global device id: ``{prefix}-{device}``."""
    return [f"{prefix}-{d}" for d in devices]


def _check_want(want: Sequence[int], devices: int) -> None:
    if len(want) != devices:
        raise ValueError(f"want has {len(want)} entries, need {devices}")


class KafkaLive:
    """``KafkaSource`` as a ``LiveSource``: positions are offsets, nothing to acknowledge."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source
        self.devices = len(source.topics)
        self._skipped: Counter[str] = Counter()

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Return up to ``want[d]`` decoded samples per device; ids are offsets."""
        _check_want(want, self.devices)
        out: list[Delivery] = []
        for records in self.source.poll(want, timeout_s):
            x, y, kept, bad = decode_valid(
                [data for _, data in records],
                max_bytes=self.source.max_bytes,
                expect_shape=self.source.shape or (),
                num_classes=self.source.num_classes,
            )
            self._skipped.update(bad)
            out.append(Delivery(x, y, [str(records[i][0]) for i in kept], bad.total()))
        return out

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Do nothing: the offsets handed out are the positions."""

    def positions(self) -> dict[str, int]:
        """Return the next offset per topic."""
        return self.source.positions()

    def broker_count(self, device: int) -> int:
        """Return the high watermark (next offset to be written) of the topic's partition 0.

        The larger of the broker's answer to a ListOffsets query and the watermark of the last
        fetch response: Tansu 0.6 answers ListOffsets with the last batch's base offset + 1.
        """
        from confluent_kafka import TopicPartition

        tp = TopicPartition(self.source.topics[device], 0)
        consumer = self.source._c  # the source's own connection; no second client
        _, asked = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
        _, fetched = consumer.get_watermark_offsets(tp, cached=True)
        return max(int(asked), int(fetched))

    def skipped(self) -> dict[str, int]:
        """Return the invalid messages passed over, by reason."""
        return dict(self._skipped)

    def close(self) -> None:
        """Leave the broker."""
        self.source.close()


class RedisLive:
    """``RedisSource`` as a ``LiveSource``: acknowledge when done; invalid entries at once."""

    def __init__(self, source: RedisSource) -> None:
        self.source = source
        self.devices = len(source.streams)
        self._skipped: Counter[str] = Counter()

    def poll(self, want: Sequence[int], timeout_s: float) -> list[Delivery]:
        """Return up to ``want[d]`` decoded samples per device; ids are entry ids."""
        _check_want(want, self.devices)
        block_ms = max(1, round(timeout_s * 1000)) if timeout_s > 0 else 0
        out: list[Delivery] = []
        for d, entries in enumerate(self.source.poll(want, block_ms)):
            x, y, kept, bad = decode_valid(
                [data for _, data in entries],
                max_bytes=self.source.max_bytes,
                expect_shape=self.source.shape or (),
                num_classes=self.source.num_classes,
            )
            ids = [entries[i][0] for i in kept]
            if bad:
                good = set(kept)
                self.source.ack(d, [e for i, (e, _) in enumerate(entries) if i not in good])
                self._skipped.update(bad)
            out.append(Delivery(x, y, ids, bad.total()))
        return out

    def done(self, device: int, ids: Sequence[str]) -> None:
        """Acknowledge the entries (XACK): the group will not deliver them again."""
        self.source.ack(device, ids)

    def positions(self) -> dict[str, int]:
        """Return {}: the consumer group keeps the position, un-acked entries come back."""
        return {}

    def broker_count(self, device: int) -> int:
        """Return the stream's length (XLEN)."""
        return self.source.stream_length(self.source.streams[device])

    def skipped(self) -> dict[str, int]:
        """Return the entries acknowledged without use, by reason (also deleted entries)."""
        return dict(self._skipped + self.source.skipped)

    def close(self) -> None:
        """Close the connection (un-acked entries stay pending on the server)."""
        self.source.close()


def check_reachable(kind: str, url: str, timeout_s: float = 3.0, key: str = "--url") -> None:
    """Raise UserError (one line, naming ``key``) unless the broker at ``url`` answers in time."""
    if kind == "redis":
        import redis

        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
        except ValueError as err:
            raise UserError(f"{key}: not a Redis URL: {url!r} ({err})") from None
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{key}: cannot reach redis at {url}: {msg}") from None
        finally:
            client.close()
    elif kind == "kafka":
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if not url or "://" in url or ":" not in url:
            raise UserError(f"{key}: a Kafka bootstrap address is host:port, got {url!r}")
        admin = AdminClient({"bootstrap.servers": url, "log_level": 0}, logger=_LOG)
        try:
            admin.list_topics(timeout=timeout_s)
        except KafkaException as err:
            raise UserError(f"{key}: cannot reach kafka at {url}: {err.args[0].str()}") from None
    else:
        raise UserError(f"broker: unknown kind {kind!r}; known: kafka, redis")


def open_source(
    kind: str,
    *,
    url: str,
    streams: Sequence[str],
    shape: tuple[int, ...],
    num_classes: int,
    max_bytes: int,
    positions: Mapping[str, int] | None = None,
    group: str = "scadles",
    consumer: str = "rank0",
    replay: Replay | None = None,
    devices: Sequence[int] | None = None,
    start_s: float = 0.0,
) -> LiveSource:
    """Open the live source of this rank's streams.

    ``replay`` = (this rank's partitions, the rate schedule, seed) for kind "replay";
    ``devices`` are the global ids of ``streams`` (replay rows and seeds; default 0..n-1).
    """
    if kind == "replay":
        from scadles.live.replay import ReplaySource

        if replay is None:
            raise ValueError("open_source('replay') needs replay=(parts, schedule, seed)")
        parts, schedule, seed = replay
        return ReplaySource(
            parts, schedule, seed, streams, devices=devices, positions=positions, start_s=start_s
        )
    if kind == "kafka":
        from scadles.live.kafka_stream import KafkaSource

        check_reachable(kind, url)
        src = KafkaSource(url, streams, max_bytes, shape, positions, num_classes=num_classes)
        return KafkaLive(src)
    if kind == "redis":
        from scadles.live.redis_stream import RedisSource

        check_reachable(kind, url)
        rsrc = RedisSource(url, streams, group, consumer, max_bytes, shape, num_classes=num_classes)
        return RedisLive(rsrc)
    raise UserError(f"live source: unknown kind {kind!r}; known: {', '.join(KINDS)}")
