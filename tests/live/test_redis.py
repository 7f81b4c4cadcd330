"""Redis Streams on a real redis-server: nothing lost, nothing duplicated, restarts survived."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest
import torch

from scadles.errors import UserError
from scadles.live.produce import produce
from scadles.live.redis_stream import RedisSink, RedisSource
from scadles.live.wire import encode

if TYPE_CHECKING:
    from conftest import Server

SHAPE = (3,)
MAX = 1024
DEADLINE_S = 10.0


def _msg(i: int) -> bytes:
    """Return sample i: its label is i, so the labels seen tell which samples arrived."""
    return encode(torch.full(SHAPE, float(i)), i)


def _drain(src: RedisSource, want: list[int], per_poll: int, acked: list[Counter[int]]) -> None:
    """Poll, decode and ack until each device has acked ``want[d]`` samples in total."""
    deadline = time.monotonic() + DEADLINE_S
    while any(sum(a.values()) < w for a, w in zip(acked, want, strict=True)):
        assert time.monotonic() < deadline, f"timed out with {[sum(a.values()) for a in acked]}"
        for d, entries in enumerate(src.poll([per_poll] * len(want), block_ms=100)):
            x, y, skipped = src.decode(entries)
            assert not skipped
            assert torch.equal(x, y[:, None].float().expand(-1, *SHAPE))
            acked[d].update(y.tolist())
            assert src.ack(d, [i for i, _ in entries]) == len(entries)


def test_publish_then_consume_all_exactly_once(redis_url: str, uid: str) -> None:
    streams = [f"dev0-{uid}", f"dev1-{uid}"]
    sink = RedisSink(redis_url)
    n = [120, 45]
    for d, stream in enumerate(streams):
        for i in range(n[d]):
            sink.publish(stream, _msg(i))
    src = RedisSource(redis_url, streams, "g", "c0", MAX, SHAPE)
    acked: list[Counter[int]] = [Counter(), Counter()]
    _drain(src, n, per_poll=16, acked=acked)
    assert [sorted(a.elements()) for a in acked] == [list(range(k)) for k in n]
    assert src.poll([16, 16], block_ms=50) == [[], []]
    assert [src.pending_count(d) for d in range(2)] == [0, 0]
    assert [sink.stream_length(s) for s in streams] == n


def test_poll_respects_per_device_limits_and_waits_for_late_messages(
    redis_url: str, uid: str
) -> None:
    streams = [f"a-{uid}", f"b-{uid}"]
    sink = RedisSink(redis_url)
    src = RedisSource(redis_url, streams, "g", "c0", MAX, SHAPE)  # before anything is published
    assert src.poll([4, 4], block_ms=0) == [[], []]
    for i in range(10):
        sink.publish(streams[0], _msg(i))
    got = src.poll([4, 0], block_ms=100)
    assert [len(g) for g in got] == [4, 0]
    got = src.poll([100, 100], block_ms=100)
    assert [len(g) for g in got] == [6, 0]


def test_unacked_messages_are_redelivered_after_a_consumer_crash(redis_url: str, uid: str) -> None:
    stream = f"crash-{uid}"
    sink = RedisSink(redis_url)
    for i in range(30):
        sink.publish(stream, _msg(i))
    first = RedisSource(redis_url, [stream], "g", "c0", MAX, SHAPE)
    (taken,) = first.poll([20], block_ms=100)
    first.ack(0, [i for i, _ in taken[:5]])  # trained 5, then crashed holding 15
    first.close()
    again = RedisSource(redis_url, [stream], "g", "c0", MAX, SHAPE)
    redelivered = again.pending(0)
    assert redelivered == taken[5:]
    assert again.ack(0, [i for i, _ in redelivered]) == 15
    acked: list[Counter[int]] = [Counter(range(20))]
    _drain(again, [30], per_poll=8, acked=acked)  # pending already handed out: not again
    assert sorted(acked[0].elements()) == list(range(30))


def test_another_consumer_claims_a_dead_consumers_messages(redis_url: str, uid: str) -> None:
    stream = f"claim-{uid}"
    sink = RedisSink(redis_url)
    for i in range(12):
        sink.publish(stream, _msg(i))
    dead = RedisSource(redis_url, [stream], "g", "dead", MAX, SHAPE)
    (taken,) = dead.poll([12], block_ms=100)
    heir = RedisSource(redis_url, [stream], "g", "heir", MAX, SHAPE)
    assert heir.poll([12], block_ms=0) == [[]]  # nothing new: all delivered to "dead"
    claimed = heir.claim(0, min_idle_ms=0)
    assert claimed == taken
    assert heir.ack(0, [i for i, _ in claimed]) == 12
    assert heir.pending_count(0) == 0


def test_server_restart_mid_run_loses_nothing(redis_aof: Server, uid: str) -> None:
    url = f"redis://127.0.0.1:{redis_aof.port}/0"
    streams = [f"r0-{uid}", f"r1-{uid}"]
    n, half = 80, 40
    sink = RedisSink(url)
    src = RedisSource(url, streams, "g", "c0", MAX, SHAPE)
    for d, stream in enumerate(streams):
        for i in range(half):
            sink.publish(stream, _msg(i + 1000 * d))
    acked: list[Counter[int]] = [Counter(), Counter()]
    _drain(src, [25, 25], per_poll=5, acked=acked)
    held = src.poll([10, 10], block_ms=100)  # delivered, not yet acked when the server dies

    redis_aof.stop(kill=True)  # a crash: only what the AOF fsynced survives
    redis_aof.start()

    for d, entries in enumerate(held):  # the trainer finishes its batch and acks after restart
        acked[d].update(src.decode(entries)[1].tolist())
        assert src.ack(d, [i for i, _ in entries]) == len(entries)
    for d, stream in enumerate(streams):
        for i in range(half, n):
            sink.publish(stream, _msg(i + 1000 * d))
    _drain(src, [n, n], per_poll=7, acked=acked)
    for d in range(2):
        assert sorted(acked[d].elements()) == [i + 1000 * d for i in range(n)]
        assert src.pending_count(d) == 0
        assert src.stream_length(streams[d]) == n
    assert src.poll([5, 5], block_ms=50) == [[], []]


def test_poll_and_ack_ride_out_a_server_outage(redis_aof: Server, uid: str) -> None:
    url = f"redis://127.0.0.1:{redis_aof.port}/0"
    stream = f"outage-{uid}"
    sink = RedisSink(url)
    for i in range(30):
        sink.publish(stream, _msg(i))
    src = RedisSource(url, [stream], "g", "c0", MAX, SHAPE)
    (held,) = src.poll([5], block_ms=100)
    redis_aof.stop(kill=True)
    restart = threading.Timer(0.5, redis_aof.start)
    restart.start()
    try:
        t0 = time.monotonic()
        (more,) = src.poll([10], block_ms=100)  # retries until the server is back
        assert time.monotonic() - t0 >= 0.4
    finally:
        restart.join(timeout=20)
    assert src.decode(more)[1].tolist() == list(range(5, 15))
    (rest,) = src.poll([100], block_ms=100)  # re-reads the pending list: held ones not again
    assert src.decode(rest)[1].tolist() == list(range(15, 30))
    for entries in (held, more, rest):
        assert src.ack(0, [i for i, _ in entries]) == len(entries)
    assert src.pending_count(0) == 0
    assert src.poll([100], block_ms=50) == [[]]


def test_a_restarted_consumer_resumes_after_a_server_restart(redis_aof: Server, uid: str) -> None:
    url = f"redis://127.0.0.1:{redis_aof.port}/0"
    stream = f"both-{uid}"
    sink = RedisSink(url)
    for i in range(20):
        sink.publish(stream, _msg(i))
    src = RedisSource(url, [stream], "g", "c0", MAX, SHAPE)
    acked: list[Counter[int]] = [Counter()]
    _drain(src, [8], per_poll=4, acked=acked)
    src.poll([5], block_ms=100)  # handed out, never acked: the consumer dies with them
    src.close()
    redis_aof.stop()
    redis_aof.start()
    again = RedisSource(url, [stream], "g", "c0", MAX, SHAPE)
    _drain(again, [20], per_poll=6, acked=acked)
    assert sorted(acked[0].elements()) == list(range(20))


def _parts(sizes: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return per-stream samples whose label is their row, each row distinct across streams."""
    parts = {}
    for k, (name, n) in enumerate(sizes.items()):
        x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + 1000 * k  # (n, 3)
        parts[name] = (x, torch.arange(n))
    return parts


def test_producer_paces_each_stream_at_its_rate(redis_url: str, uid: str) -> None:
    fast, slow = f"fast-{uid}", f"slow-{uid}"
    parts = _parts({fast: 64, slow: 30})
    rates = {fast: 200.0, slow: 50.0}
    sink = RedisSink(redis_url)
    t0 = time.monotonic()
    sent = produce(sink, parts, rates, duration_s=1.0, seed=3)
    took = time.monotonic() - t0
    assert 0.95 <= took < 2.0
    src = RedisSource(redis_url, [fast, slow], "g", "c", MAX, SHAPE)
    polled = src.poll([1000, 1000], block_ms=100)
    for name, entries in zip([fast, slow], polled, strict=True):
        assert abs(sent[name] - rates[name]) <= 0.1 * rates[name]
        assert len(entries) == sent[name] == sink.stream_length(name)
        x, y, skipped = src.decode(entries)
        assert not skipped
        assert torch.equal(x, parts[name][0][y])  # payloads are the source samples
        n = parts[name][0].shape[0]
        assert sorted(y[:n].tolist()) == list(range(n))  # each pass is a shuffle of the part
        assert y[:n].tolist() != list(range(n))
        stamps = torch.tensor([int(i.split("-")[0]) for i, _ in entries], dtype=torch.float64)
        lag_ms = (stamps - stamps[0]) - torch.arange(len(entries)) * 1000 / rates[name]
        assert lag_ms.abs().max() < 150, "sends follow t0 + i / rate"


def test_producer_stops_at_count_or_when_told(redis_url: str, uid: str) -> None:
    a, b = f"a-{uid}", f"b-{uid}"
    parts = _parts({a: 5, b: 5})
    sink = RedisSink(redis_url)
    assert produce(sink, parts, {a: 1000.0, b: 500.0}, count=7) == {a: 7, b: 7}
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    sent = produce(sink, parts, {a: 100.0, b: 10.0}, stop=stop)
    assert time.monotonic() - t0 < 1.0
    assert 20 <= sent[a] <= 40 and 2 <= sent[b] <= 4
    assert [sink.stream_length(s) for s in (a, b)] == [7 + sent[a], 7 + sent[b]]


def test_producer_refuses_streams_without_rates(redis_url: str) -> None:
    with pytest.raises(UserError, match="rate"):
        produce(RedisSink(redis_url), _parts({"s": 3}), {"s": 0.0}, count=1)
    with pytest.raises(UserError, match="differ"):
        produce(RedisSink(redis_url), _parts({"s": 3}), {"t": 1.0}, count=1)
    with pytest.raises(UserError, match="never end"):
        produce(RedisSink(redis_url), _parts({"s": 3}), {"s": 1.0})
