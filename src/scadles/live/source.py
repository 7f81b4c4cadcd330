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

``SOURCES`` maps each ``live.source`` name to a factory of a ``SourceRequest``; register one to
add a source. The protocol a source implements (``LiveSource``, ``Delivery``) is in
``scadles.live.base`` and re-exported here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from scadles.errors import UserError
from scadles.live.base import (
    DEFAULT_PREFIX,
    Delivery,
    LiveSource,
    Replay,
    SourceRequest,
    stream_names,
)
from scadles.live.wire import decode_valid
from scadles.registry import Registry

if TYPE_CHECKING:
    from scadles.live.kafka_stream import KafkaSource
    from scadles.live.redis_stream import RedisSource

__all__ = [
    "DEFAULT_PREFIX",
    "SOURCES",
    "Delivery",
    "KafkaLive",
    "LiveSource",
    "RedisLive",
    "Replay",
    "SourceRequest",
    "check_reachable",
    "open_source",
    "stream_names",
]

_LOG = logging.getLogger(__name__)


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


def _open_replay(req: SourceRequest) -> LiveSource:
    """Start one producer thread per device replaying its partition in real time."""
    from scadles.live.replay import ReplaySource

    if req.replay is None:
        raise ValueError("open_source('replay') needs replay=(parts, schedule, seed)")
    parts, schedule, seed = req.replay
    return ReplaySource(
        parts,
        schedule,
        seed,
        req.streams,
        devices=req.devices,
        positions=req.positions,
        start_s=req.start_s,
    )


def _open_kafka(req: SourceRequest) -> LiveSource:
    """Join the Kafka topics of the streams (the broker client is imported only here)."""
    from scadles.live.kafka_stream import KafkaSource

    check_reachable("kafka", req.url)
    src = KafkaSource(
        req.url, req.streams, req.max_bytes, req.shape, req.positions, num_classes=req.num_classes
    )
    return KafkaLive(src)


def _open_redis(req: SourceRequest) -> LiveSource:
    """Join the Redis streams' consumer group (the broker client is imported only here)."""
    from scadles.live.redis_stream import RedisSource

    check_reachable("redis", req.url)
    src = RedisSource(
        req.url,
        req.streams,
        req.group,
        req.consumer,
        req.max_bytes,
        req.shape,
        num_classes=req.num_classes,
    )
    return RedisLive(src)


# live.source -> factory; "sim" (modelled arrivals) needs no source and is not an entry
SOURCES: Registry[Callable[[SourceRequest], LiveSource]] = Registry(
    "kind",
    {"replay": _open_replay, "kafka": _open_kafka, "redis": _open_redis},
    key="live.source",
)


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
    """Open the live source of this rank's streams (the SOURCES entry ``kind``).

    ``replay`` = (this rank's partitions, the rate schedule, seed) for kind "replay";
    ``devices`` are the global ids of ``streams`` (replay rows and seeds; default 0..n-1).
    """
    factory = SOURCES.get(kind)
    return factory(
        SourceRequest(
            url=url,
            streams=streams,
            shape=shape,
            num_classes=num_classes,
            max_bytes=max_bytes,
            positions=positions,
            group=group,
            consumer=consumer,
            replay=replay,
            devices=devices,
            start_s=start_s,
        )
    )
