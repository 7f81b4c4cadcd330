"""Kafka topics against a real Tansu broker: all messages arrive, positions resume exactly once."""

from __future__ import annotations

import time

import pytest
import torch

from scadles.live.kafka_stream import KafkaSink, KafkaSource, ensure_topics
from scadles.live.produce import produce
from scadles.live.wire import encode

SHAPE = (2, 2)
MAX = 1024
DEADLINE_S = 15.0


def _msg(i: int) -> bytes:
    """Return sample i: its label is i, so the labels seen tell which samples arrived."""
    return encode(torch.full(SHAPE, float(i)), i)


def _publish(sink: KafkaSink, topic: str, labels: range) -> None:
    for i in labels:
        sink.publish(topic, _msg(i))
    assert sink.flush(10.0) == 0 and sink.failed == 0


def _consume(src: KafkaSource, want: list[int], per_poll: list[int]) -> list[list[int]]:
    """Poll until device d got ``want[d]`` samples; return their labels, checking the payloads."""
    got: list[list[int]] = [[] for _ in want]
    deadline = time.monotonic() + DEADLINE_S
    while any(len(g) < w for g, w in zip(got, want, strict=True)):
        assert time.monotonic() < deadline, f"timed out with {[len(g) for g in got]} of {want}"
        ask = [min(p, w - len(g)) for p, w, g in zip(per_poll, want, got, strict=True)]
        for d, records in enumerate(src.poll(ask, timeout_s=0.2)):
            assert len(records) <= ask[d]
            x, y, skipped = src.decode(records)
            assert not skipped
            assert torch.equal(x, y[:, None, None].float().expand(-1, *SHAPE))
            got[d] += y.tolist()
    return got


def test_produce_to_two_topics_then_consume_all(kafka_bootstrap: str, uid: str) -> None:
    topics = [f"trainer-0-{uid}", f"trainer-1-{uid}"]
    n = [150, 60]
    with KafkaSink(kafka_bootstrap) as sink:
        for topic, k in zip(topics, n, strict=True):
            _publish(sink, topic, range(k))
    with KafkaSource(kafka_bootstrap, topics, MAX, SHAPE) as src:
        got = _consume(src, n, per_poll=[32, 7])
        assert got == [list(range(k)) for k in n]  # in order, each once
        assert src.poll([10, 10], timeout_s=0.3) == [[], []]
        assert src.positions() == dict(zip(topics, n, strict=True))


def test_saved_positions_resume_exactly_once(kafka_bootstrap: str, uid: str) -> None:
    topics = [f"a-{uid}", f"b-{uid}"]
    n = 100
    with KafkaSink(kafka_bootstrap) as sink:
        for topic in topics:
            _publish(sink, topic, range(n))
        with KafkaSource(kafka_bootstrap, topics, MAX, SHAPE) as first:
            head = _consume(first, [37, 55], per_poll=[8, 64])  # over-fetches, hands out as asked
            saved = first.positions()
        assert saved == {topics[0]: 37, topics[1]: 55}
        with KafkaSource(kafka_bootstrap, topics, MAX, SHAPE, positions=saved) as second:
            for topic in topics:
                _publish(sink, topic, range(n, n + 20))  # and more arrive after the restart
            tail = _consume(second, [n + 20 - 37, n + 20 - 55], per_poll=[16, 16])
            assert second.poll([5, 5], timeout_s=0.3) == [[], []]
    assert [h + t for h, t in zip(head, tail, strict=True)] == [list(range(n + 20))] * 2


def test_consumer_started_before_producer_waits_for_messages(
    kafka_bootstrap: str, uid: str
) -> None:
    topic = f"late-{uid}"
    with KafkaSource(kafka_bootstrap, [topic], MAX, SHAPE) as src:
        assert src.poll([4], timeout_s=0.1) == [[]]
        with KafkaSink(kafka_bootstrap) as sink:
            _publish(sink, topic, range(3))
        assert _consume(src, [3], per_poll=[10]) == [[0, 1, 2]]


def test_positions_for_unknown_topics_are_refused(kafka_bootstrap: str, uid: str) -> None:
    with pytest.raises(ValueError, match="not in"):
        KafkaSource(kafka_bootstrap, [f"x-{uid}"], MAX, SHAPE, positions={f"y-{uid}": 3})


def test_ensure_topics_is_idempotent(kafka_bootstrap: str, uid: str) -> None:
    ensure_topics(kafka_bootstrap, [f"t-{uid}"])
    ensure_topics(kafka_bootstrap, [f"t-{uid}", f"u-{uid}"])
    with KafkaSink(kafka_bootstrap) as sink:
        _publish(sink, f"u-{uid}", range(2))


def test_producer_streams_the_parts_through_kafka(kafka_bootstrap: str, uid: str) -> None:
    topics = [f"p0-{uid}", f"p1-{uid}"]
    parts = {
        t: (torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(k)), torch.arange(20))
        for k, t in enumerate(topics)
    }
    with KafkaSink(kafka_bootstrap) as sink:
        sent = produce(sink, parts, {topics[0]: 200.0, topics[1]: 50.0}, duration_s=0.5, seed=1)
        assert sent == {topics[0]: 100, topics[1]: 25}
        assert sink.failed == 0
    got = [0, 0]
    with KafkaSource(kafka_bootstrap, topics, MAX, SHAPE) as src:
        deadline = time.monotonic() + DEADLINE_S
        while got != [100, 25]:
            assert time.monotonic() < deadline, f"timed out with {got}"
            for d, records in enumerate(src.poll([64, 64], timeout_s=0.2)):
                x, y, skipped = src.decode(records)
                assert not skipped
                assert torch.equal(x, parts[topics[d]][0][y])
                got[d] += len(records)
