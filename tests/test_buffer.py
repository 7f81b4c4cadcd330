"""Buffer policies and the accounting identity arrived = trained + dropped + held."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scadles.data.buffer import StreamBuffer


def test_persistence_keeps_everything() -> None:
    b = StreamBuffer.empty(2, "persistence", None)
    b.push(torch.tensor([10, 3]))
    start, n = b.take(torch.tensor([4, 4]))
    assert start.tolist() == [0, 0] and n.tolist() == [4, 3]
    assert b.end_step(torch.tensor([10, 3])).tolist() == [0, 0]
    assert b.held.tolist() == [6, 0]


def test_truncation_keeps_last_iteration_only() -> None:
    b = StreamBuffer.empty(1, "truncation", None)
    b.push(torch.tensor([10]))
    b.take(torch.tensor([4]))
    b.push(torch.tensor([3]))  # arrived during this step
    dropped = b.end_step(torch.tensor([3]))
    assert dropped.tolist() == [6] and b.held.tolist() == [3]
    start, _ = b.take(torch.tensor([3]))
    assert start.tolist() == [10]  # the newest three: arrival numbers 10, 11, 12


def test_capacity_drops_oldest() -> None:
    b = StreamBuffer.empty(1, "persistence", 5)
    assert b.push(torch.tensor([8])).tolist() == [3]
    start, n = b.take(torch.tensor([10]))
    assert start.tolist() == [3] and n.tolist() == [5]


@pytest.mark.fuzz  # random arrival and demand sequences; examples from the Hypothesis profile
@given(
    policy=st.sampled_from(["persistence", "truncation"]),
    capacity=st.one_of(st.none(), st.integers(1, 50)),
    ops=st.lists(
        st.tuples(
            st.lists(st.integers(0, 40), min_size=3, max_size=3),
            st.lists(st.integers(0, 40), min_size=3, max_size=3),
        ),
        max_size=30,
    ),
)
def test_accounting_identity(policy: str, capacity: int | None, ops: list) -> None:  # type: ignore[type-arg]
    b = StreamBuffer.empty(3, policy, capacity)
    arrived = torch.zeros(3, dtype=torch.int64)
    for arr, want in ops:
        a = torch.tensor(arr)
        b.push(a)
        arrived += a
        b.take(torch.tensor(want))
        b.end_step(a)
        assert torch.equal(arrived, b.trained + b.dropped + b.held)
        assert bool((b.held >= 0).all())
        if capacity is not None:
            assert bool((b.held <= capacity).all())
        if policy == "truncation":
            assert bool((b.held <= a).all())
