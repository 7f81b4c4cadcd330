"""Kafka topics as device streams: one single-partition topic per device, positions kept by us.

Each message value is one wire message (``scadles.live.wire``), as in the paper's producers
([authors' code], one topic ``trainer-<rank>`` per device). The source joins no
consumer group and commits nothing: it assigns partition 0 of every topic explicitly, starts at
the positions it is given (a checkpoint's, or 0) and reports the next offset per topic through
``positions()``, so a restarted trainer resumes exactly where its checkpoint stopped. A message is
counted as consumed once ``poll`` has handed it out; messages fetched beyond the asked counts are
held back for the next poll and are not counted.

Tested against the Tansu broker (Kafka protocol); consumer groups are avoided on purpose.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Self

import torch
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from scadles.live.wire import decode_many

_LOG = logging.getLogger(__name__)
Record = tuple[int, bytes]  # (offset, wire message)


def ensure_topics(bootstrap: str, topics: Sequence[str], timeout_s: float = 10.0) -> None:
    """Create the single-partition topics that do not exist yet."""
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=_LOG)
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]
    missing = [t for t in missing if t.topic not in existing]
    if not missing:
        return
    for future in admin.create_topics(missing, operation_timeout=timeout_s).values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class KafkaSink:
    """Publish wire messages to partition 0 of per-device topics, creating topics on first use."""

    def __init__(self, bootstrap: str, *, linger_ms: int = 5, create_topics: bool = True) -> None:
        self.bootstrap = bootstrap
        self._p = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all", "logger": _LOG}
        )
        self._create = create_topics
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.failed = 0  # messages the broker did not accept

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        """Count a failed delivery (called from ``poll``/``flush``)."""
        if err is not None:
            with self._lock:
                self.failed += 1
            _LOG.warning("kafka delivery to %s failed: %s", msg.topic(), err)

    def _ensure(self, topic: str) -> None:
        """Create ``topic`` once per sink if asked to."""
        with self._lock:
            if topic in self._known:
                return
            if self._create:
                ensure_topics(self.bootstrap, [topic])
            self._known.add(topic)

    def publish(self, topic: str, data: bytes) -> None:
        """Queue one message for ``topic`` (sent asynchronously; ``flush`` waits for delivery)."""
        self._ensure(topic)
        while True:
            try:
                self._p.produce(topic, value=data, partition=0, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._p.poll(0.05)
        self._p.poll(0)

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until queued messages are delivered; return how many are still queued."""
        return int(self._p.flush(timeout_s))

    def close(self) -> None:
        """Deliver what is queued (up to 10 s), then release the producer."""
        self.flush()
        close = getattr(self._p, "close", None)  # only in newer confluent-kafka
        if close is not None:
            close()

    def __enter__(self) -> Self:
        """Return self, closed on leaving the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()


class KafkaSource:
    """Read partition 0 of one topic per device, from stored positions, without a consumer group."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        max_bytes: int,
        shape: tuple[int, ...] | None,
        positions: Mapping[str, int] | None = None,
        *,
        num_classes: int | None = None,
        create_topics: bool = True,
    ) -> None:
        self.topics = list(topics)
        start = dict(positions or {})
        unknown = sorted(set(start) - set(self.topics))
        if unknown:
            raise ValueError(f"positions name topics {unknown} that are not in {self.topics}")
        self.max_bytes, self.shape, self.num_classes = max_bytes, shape, num_classes
        if create_topics:
            ensure_topics(bootstrap, self.topics)
        self._c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"scadles-unused-{uuid.uuid4().hex}",  # required; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "logger": _LOG,
            }
        )
        self._next = [int(start.get(t, 0)) for t in self.topics]  # next offset to hand out
        self._fetched = list(self._next)  # next offset expected from the consumer
        self._carry: list[list[Record]] = [[] for _ in self.topics]  # fetched, not handed out
        self._index = {t: d for d, t in enumerate(self.topics)}
        self._paused: set[int] = set()
        self._c.assign(
            [TopicPartition(t, 0, p) for t, p in zip(self.topics, self._next, strict=True)]
        )

    def positions(self) -> dict[str, int]:
        """Return the next offset per topic: every earlier message was handed out by ``poll``."""
        return dict(zip(self.topics, self._next, strict=True))

    def _pause_only(self, full: set[int]) -> None:
        """Pause fetching for the devices in ``full``, resume the others."""
        stop, go = full - self._paused, self._paused - full
        if stop:
            self._c.pause([TopicPartition(self.topics[d], 0) for d in sorted(stop)])
        if go:
            self._c.resume([TopicPartition(self.topics[d], 0) for d in sorted(go)])
        self._paused = set(full)

    def _take(self, msgs: list[Message]) -> int:
        """Move fetched messages into the carry lists; return how many were new."""
        new = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    _LOG.warning("kafka consume: %s", err)
                continue
            d, offset = self._index[str(m.topic())], int(m.offset() or 0)
            if offset < self._fetched[d]:  # already held or handed out
                continue
            self._fetched[d] = offset + 1
            self._carry[d].append((offset, m.value() or b""))
            new += 1
        return new

    def poll(self, max_per_device: Sequence[int], timeout_s: float = 0.0) -> list[list[Record]]:
        """Return up to ``max_per_device[i]`` messages per device; wait ``timeout_s`` for one."""
        if len(max_per_device) != len(self.topics):
            raise ValueError(
                f"max_per_device has {len(max_per_device)} entries, need {len(self.topics)}"
            )
        deadline = time.monotonic() + timeout_s
        got_any = any(self._carry[d] and n > 0 for d, n in enumerate(max_per_device))
        while True:
            need = [max(0, n - len(c)) for n, c in zip(max_per_device, self._carry, strict=True)]
            if sum(need) == 0:
                break
            self._pause_only({d for d, n in enumerate(need) if n == 0})
            left = deadline - time.monotonic()
            wait = 0.0 if got_any else min(max(left, 0.0), 0.05)
            new = self._take(self._c.consume(sum(need), timeout=wait))
            got_any = got_any or new > 0
            if new == 0 and (got_any or left <= 0):
                break
        return [self._hand_out(d, n) for d, n in enumerate(max_per_device)]

    def _hand_out(self, device: int, n: int) -> list[Record]:
        """Remove and return the first ``n`` held messages of a device, advancing its position."""
        out, self._carry[device] = self._carry[device][:n], self._carry[device][n:]
        if out:
            self._next[device] = out[-1][0] + 1
        return out

    def decode(self, records: Sequence[Record]) -> tuple[torch.Tensor, torch.Tensor, Counter[str]]:
        """Decode records into (x (n, *shape), y (n,), skipped by reason); never raises."""
        return decode_many(
            (data for _, data in records),
            max_bytes=self.max_bytes,
            expect_shape=self.shape,
            num_classes=self.num_classes,
        )

    def close(self) -> None:
        """Leave the broker (nothing is committed: positions live in the caller's checkpoint)."""
        self._c.close()

    def __enter__(self) -> Self:
        """Return self, closed on leaving the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()
