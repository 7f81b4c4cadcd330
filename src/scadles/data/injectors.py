"""INJECTIONS: inject.name -> builder of the data-injection stage (paper 2.3), or of none.

A builder takes plain values, (alpha, beta, labels (N,), num_classes, parts), where parts holds
each device's training indices, and returns an ``Injection`` or None (no injection). Register a
builder to add an injection without editing the package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from scadles.data.injection import ClassPoolInjection, Injection, PeerInjection
from scadles.data.partition import label_counts
from scadles.registry import Registry

InjectionBuilder = Callable[
    [float, float, torch.Tensor, int, Sequence[torch.Tensor]], Injection | None
]  # (alpha, beta, labels (N,), num_classes, parts) -> stage


def _class_pool(
    alpha: float, beta: float, labels: torch.Tensor, num_classes: int, parts: Sequence[torch.Tensor]
) -> Injection:
    """Build the authors'-code injection: foreign classes from a pool of every device's data."""
    owner = torch.full((len(labels),), -1, dtype=torch.int64)  # (N,)
    for i, p in enumerate(parts):  # set-up, not the hot path
        owner[p] = i
    own = label_counts(labels, list(parts), num_classes) > 0  # (K, C)
    return ClassPoolInjection(alpha, beta, labels, num_classes, owner, own)


INJECTIONS: Registry[InjectionBuilder] = Registry(
    "injection",
    {
        "none": lambda alpha, beta, labels, num_classes, parts: None,
        "peers": lambda alpha, beta, labels, num_classes, parts: PeerInjection(alpha, beta),
        "class_pool": _class_pool,
    },
    key="inject.name",
)
