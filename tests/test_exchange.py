"""The production exchange conserves gradient mass under error feedback, for every compressor.

Over steps, what one device sent (the aggregated update: one device, weight 1) plus what its
error-feedback memory still holds equals the sum of its gradients: nothing is lost or made up.
The exchange under test is the one `build.exchange` gives a run (fixed switch), so the contract
covers the code that runs; every entry of the compressor registry is included automatically.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from scadles.compress import COMPRESSORS
from scadles.compress.registry import DENSE
from scadles.config.load import load_config
from scadles.exchange import Batch, Exchange
from scadles.nn import build_model
from scadles.training import build

STEPS = 6


@pytest.mark.parametrize("name", sorted(set(COMPRESSORS.names()) - DENSE))
def test_exchange_conserves_mass_with_error_feedback(name: str) -> None:
    sets = [f"compress.name={name}", "compress.policy=fixed", "devices.count=1"]
    cfg = load_config(None, [*sets, "compress.error_feedback=true"])  # on for unbiased ones too
    model = build_model("mlp", (6,), 3, width=2, gen=torch.Generator().manual_seed(0)).double()
    ex = build.exchange(cfg, model, 1, 100.0)
    assert isinstance(ex, Exchange) and ex.feedback.enabled
    ex.feedback.residual = ex.feedback.residual.double()
    fed: list[torch.Tensor] = []
    real = ex.grads.__call__

    def record(*args: Any) -> Any:
        out = real(*args)
        fed.append(out.grads[0].clone())
        return out

    ex.grads = record  # type: ignore[assignment,method-assign]
    g = torch.Generator().manual_seed(1)
    sent = torch.zeros(ex.feedback.residual.shape[1], dtype=torch.float64)  # (P,)
    for _ in range(STEPS):
        x = torch.randn(12, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (12,), generator=g)
        batch = Batch(x, y, torch.zeros(12, dtype=torch.long), torch.tensor([12]), torch.ones(1))
        sent += ex(batch, 0, g).update.double()
    total = torch.stack(fed).sum(0)  # (P,)
    assert float(total.abs().sum()) > 0 and len(fed) == STEPS
    torch.testing.assert_close(sent + ex.feedback.residual[0], total, atol=1e-4, rtol=1e-4)
