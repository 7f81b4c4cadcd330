"""LiveSource over real brokers: rows aligned with ids, corrupt messages skipped and counted,
Redis acks, Kafka positions, broker counts; and open_source's choice of source."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch

from scadles.data.rates import RateSchedule
from scadles.errors import UserError
from scadles.live.kafka_stream import KafkaSink
from scadles.live.redis_stream import RedisSink
from scadles.live.source import Delivery, LiveSource, RedisLive, open_source, stream_names
from scadles.live.wire import encode

SHAPE = (3,)
CLASSES = 10
MAX = 256
DEADLINE_S = 15.0
# one of each kind of broken message, and the reason it is skipped for
CORRUPT = [
    (b"junk", "bad_magic"),
    (encode(torch.zeros(4), 1), "shape_mismatch"),
    (encode(torch.zeros(SHAPE), 99), "bad_label"),
    (encode(torch.full(SHAPE, float("nan")), 2), "non_finite"),
    (encode(torch.zeros(100), 3), "oversized"),
]


def _messages(n: int) -> list[tuple[bytes, int | None]]:
    """Return (message, sample number or None if corrupt): samples 0..n-1, a corrupt one every
    third sample, cycling through CORRUPT."""
    out: list[tuple[bytes, int | None]] = []
    for i in range(n):
        out.append((encode(torch.full(SHAPE, float(i)), i % CLASSES), i))
        if i % 3 == 1:
            out.append((CORRUPT[(i // 3) % len(CORRUPT)][0], None))
    return out


def _reasons(n: int) -> Counter[str]:
    return Counter(CORRUPT[(i // 3) % len(CORRUPT)][1] for i in range(n) if i % 3 == 1)


def _drain(src: LiveSource, want: list[int], per_poll: int, ack: bool) -> list[list[Delivery]]:
    """Poll until device d got ``want[d]`` valid samples; optionally mark them done."""
    got: list[list[Delivery]] = [[] for _ in want]
    deadline = time.monotonic() + DEADLINE_S
    while any(sum(len(x.ids) for x in g) < w for g, w in zip(got, want, strict=True)):
        assert time.monotonic() < deadline, "timed out"
        left = [
            min(per_poll, w - sum(len(x.ids) for x in g)) for g, w in zip(got, want, strict=True)
        ]
        for d, delivery in enumerate(src.poll(left, timeout_s=0.2)):
            assert len(delivery.ids) == len(delivery.y) == delivery.x.shape[0]
            got[d].append(delivery)
            if ack:
                src.done(d, delivery.ids)
    return got


def _check_rows(deliveries: list[Delivery], number_of: dict[str, int]) -> list[int]:
    """Check every row against its id's message; return the sample numbers in order."""
    seen: list[int] = []
    for dl in deliveries:
        assert dl.x.shape[1:] == SHAPE and dl.x.dtype == torch.float32
        for row, entry in enumerate(dl.ids):
            i = number_of[entry]
            assert torch.equal(dl.x[row], torch.full(SHAPE, float(i)))
            assert int(dl.y[row]) == i % CLASSES
            seen.append(i)
    return seen


def test_redis_rows_ids_skips_and_acks(redis_url: str, uid: str) -> None:
    streams = stream_names([0, 1], f"src-{uid}")
    n = [21, 9]
    sink = RedisSink(redis_url)
    number_of: list[dict[str, int]] = [{}, {}]  # entry id -> sample number, per stream
    for d, (stream, k) in enumerate(zip(streams, n, strict=True)):
        for msg, i in _messages(k):
            entry = sink.publish(stream, msg)
            if i is not None:
                number_of[d][entry] = i
    src = open_source("redis", url=redis_url, streams=streams, shape=SHAPE, num_classes=CLASSES,
                      max_bytes=MAX, group="scadles", consumer="rank0")  # fmt: skip
    assert isinstance(src, RedisLive)
    try:
        got = _drain(src, n, per_poll=4, ack=False)
        for d in range(2):
            assert _check_rows(got[d], number_of[d]) == list(range(n[d]))
            assert sum(dl.skipped for dl in got[d]) == sum(_reasons(n[d]).values())
            # the corrupt entries were acked at once; the valid ones wait for done()
            assert src.source.pending_count(d) == n[d]
            assert src.broker_count(d) == len(_messages(n[d]))
        assert src.skipped() == dict(_reasons(n[0]) + _reasons(n[1]))
        assert src.positions() == {}
        for d in range(2):
            src.done(d, [i for dl in got[d] for i in dl.ids][:-2])
        assert [src.source.pending_count(d) for d in range(2)] == [2, 2]
    finally:
        src.close()
    again = open_source("redis", url=redis_url, streams=streams, shape=SHAPE,
                        num_classes=CLASSES, max_bytes=MAX, consumer="rank0")  # fmt: skip
    assert isinstance(again, RedisLive)
    try:  # a restarted rank gets the un-acked samples again, and only those
        rest = _drain(again, [2, 2], per_poll=8, ack=True)
        assert [_check_rows(r, number_of[d]) for d, r in enumerate(rest)] == [[19, 20], [7, 8]]
        assert [again.source.pending_count(d) for d in range(2)] == [0, 0]
        assert [len(x.ids) for x in again.poll([5, 5], timeout_s=0.1)] == [0, 0]
    finally:
        again.close()


def test_kafka_rows_ids_skips_and_resumed_positions(kafka_bootstrap: str, uid: str) -> None:
    topics = stream_names([0, 1], f"src-{uid}")
    n = [30, 12]
    number_of: list[dict[str, int]] = [{}, {}]  # offset -> sample number, per topic
    with KafkaSink(kafka_bootstrap) as sink:
        for d, (topic, k) in enumerate(zip(topics, n, strict=True)):
            for offset, (msg, i) in enumerate(_messages(k)):
                sink.publish(topic, msg)
                if i is not None:
                    number_of[d][str(offset)] = i
        assert sink.flush(10.0) == 0 and sink.failed == 0

    args = dict(
        url=kafka_bootstrap, streams=topics, shape=SHAPE, num_classes=CLASSES, max_bytes=MAX
    )
    first = open_source("kafka", **args)  # type: ignore[arg-type]
    try:
        head = _drain(first, [11, 5], per_poll=4, ack=True)
        saved = first.positions()
        assert all(first.broker_count(d) >= saved[t] for d, t in enumerate(topics))
    finally:
        first.close()
    # a position is an offset just past the last valid sample handed out (or a skip after it)
    for (topic, pos), k, want in zip(saved.items(), n, [11, 5], strict=True):
        assert topic in topics and pos == saved[topic]
        before = _messages(k)[:pos]
        assert sum(i is not None for _, i in before) == want and before[-1][1] in (want - 1, None)
    second = open_source("kafka", positions=saved, **args)  # type: ignore[arg-type]
    try:
        tail = _drain(second, [n[0] - 11, n[1] - 5], per_poll=8, ack=False)
        lengths = [len(_messages(k)) for k in n]
        assert second.positions() == dict(zip(topics, lengths, strict=True))
        assert [second.broker_count(d) for d in range(2)] == lengths
        skipped = second.skipped()
    finally:
        second.close()
    for d in range(2):
        assert _check_rows(head[d] + tail[d], number_of[d]) == list(range(n[d]))
    total = sum(dl.skipped for g in head + tail for dl in g)
    assert total == sum((_reasons(n[0]) + _reasons(n[1])).values())
    assert sum(skipped.values()) == sum(dl.skipped for g in tail for dl in g)


def test_open_source_replay_and_bad_kinds(redis_url: str) -> None:
    parts = [(torch.arange(6.0)[:, None].expand(6, 3).clone(), torch.arange(6) % 3)]
    rates = RateSchedule.constant(torch.tensor([5.0, 1000.0]))
    src = open_source("replay", url="", streams=["r-1"], shape=SHAPE, num_classes=3, max_bytes=MAX,
                      replay=(parts, rates, 0), devices=[1])  # fmt: skip
    try:
        got = _drain(src, [12], per_poll=12, ack=True)[0]  # rate 1000/s: row 1 of the schedule
        assert sorted(int(v) for dl in got for v in dl.x[:, 0].tolist()) == sorted(
            list(range(6)) * 2
        )
        assert src.positions() == {"r-1": 12} and src.broker_count(0) >= 12
    finally:
        src.close()
    common = dict(streams=["x"], shape=SHAPE, num_classes=3, max_bytes=MAX)
    with pytest.raises(UserError, match="unknown kind 'mqtt'"):
        open_source("mqtt", url=redis_url, **common)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="cannot reach redis"):
        open_source("redis", url="redis://127.0.0.1:1/0", **common)  # type: ignore[arg-type]
