"""Momentum correction (DGC): oracles against momentum SGD, mass conservation, masking, resume."""

from __future__ import annotations

import pytest
import torch

from scadles.compress import ErrorFeedback
from scadles.compress.momentum import LocalMomentum
from scadles.compress.topk import TopK
from scadles.config.load import Config, config_from_dict
from scadles.engine import Engine
from scadles.errors import UserError
from scadles.training import build

K, P = 3, 40


def config(**compress: object) -> Config:
    return config_from_dict(
        {
            **_plain_dict(),
            "train": {"steps": 30, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
            "compress": compress,
        }
    )


def run(cfg: Config, steps: int) -> Engine:
    eng = build.engine(cfg)
    for _ in range(steps):
        eng.step()
    return eng


def flat(eng: Engine) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in eng.model.parameters()])


def test_nothing_dropped_is_momentum_sgd_with_weight_decay() -> None:
    """Top-k keeping every value, velocities per device: torch.optim.SGD(momentum, wd) to 1e-5."""
    dense = run(config(name="none"), 25)
    mc = config(name="topk", ratio=1.0, policy="fixed", momentum_correction=True)
    corrected = run(mc, 25)
    assert corrected.optimizer.param_groups[0]["momentum"] == 0.0
    assert corrected.optimizer.param_groups[0]["weight_decay"] == 0.0
    torch.testing.assert_close(flat(corrected), flat(dense), atol=1e-5, rtol=0)
    # the check can fail: without the velocities the same run is plain SGD, far from it
    plain = config(
        name="topk", ratio=1.0, policy="fixed", momentum_correction=True, momentum_masking=True
    )
    assert (flat(run(plain, 25)) - flat(dense)).abs().max() > 1e-3


def test_masking_everything_sent_is_sgd_without_momentum() -> None:
    """Ratio 1 with factor masking clears every velocity: SGD with weight decay, no momentum."""
    sgd = config_from_dict(
        {**_plain_dict(), "train": {"steps": 30, "lr": 0.05, "momentum": 0.0, "weight_decay": 1e-3}}
    )
    dense = run(sgd, 20)
    masked_cfg = config(
        name="topk", ratio=1.0, policy="fixed", momentum_correction=True, momentum_masking=True
    )
    masked = run(masked_cfg, 20)
    torch.testing.assert_close(flat(masked), flat(dense), atol=1e-5, rtol=0)


def _plain_dict() -> dict[str, object]:
    return {
        "data": {"name": "synthetic", "n_train": 600, "n_test": 100},
        "model": {"name": "mlp", "width": 16},
        "devices": {"count": 4},
        "streams": {"rates": [20, 40, 64, 90]},
        "policy": {"name": "ddl", "batch": 16},
        "eval": {"every": 100},
        "compress": {"name": "none"},
    }


@pytest.mark.parametrize("masking", [False, True])
def test_feedback_over_velocities_conserves_mass(masking: bool) -> None:
    """sum of what was sent + residual == sum of the velocities fed in, with or without masking."""
    gen = torch.Generator().manual_seed(0)
    vel = LocalMomentum(K, P, 0.9, 0.0, masking=masking)
    vel.velocity = vel.velocity.double()
    memory = ErrorFeedback.zeros(K, P, dtype=torch.float64)
    comp = TopK(0.1)
    sent = torch.zeros(K, P, dtype=torch.float64)
    fed = torch.zeros(K, P, dtype=torch.float64)
    for _ in range(30):
        g = torch.randn(K, P, generator=gen, dtype=torch.float64)
        u = vel.accumulate(g, torch.zeros(P))
        fed += u
        acc = memory.compensate(u)
        kept = comp.decompress(comp.compress(acc, gen)).double()
        memory.update(acc, kept)
        vel.mask(kept)
        sent += kept
    torch.testing.assert_close(sent + memory.residual, fed, atol=1e-9, rtol=0)


def test_masking_clears_exactly_the_sent_coordinates() -> None:
    vel = LocalMomentum(2, 4, 0.5, 0.0, masking=True)
    vel.accumulate(torch.ones(2, 4), torch.zeros(4))
    vel.mask(torch.tensor([[0.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, -2.0]]))
    assert torch.equal(vel.velocity, torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
    vel.masking = False
    vel.mask(torch.ones(2, 4))
    assert torch.equal(vel.velocity, torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))


def test_weight_decay_enters_every_device_velocity() -> None:
    vel = LocalMomentum(2, 3, 0.9, 0.1, masking=False)
    u = vel.accumulate(torch.zeros(2, 3), torch.tensor([1.0, -2.0, 4.0]))
    assert torch.allclose(u, torch.tensor([[0.1, -0.2, 0.4]] * 2))
    u = vel.accumulate(torch.zeros(2, 3), torch.tensor([1.0, -2.0, 4.0]))
    assert torch.allclose(u, torch.tensor([[0.19, -0.38, 0.76]] * 2))


def test_resume_restores_the_velocities() -> None:
    """Stop after 6 steps, restore into a fresh engine, run on: the same parameters bit for bit."""
    cfg = config(name="topk", ratio=0.2, policy="scadles", momentum_correction=True)
    whole = run(cfg, 12)
    first = run(cfg, 6)
    state = first.state_dict()
    assert state["exchange"]["momentum"]["velocity"].abs().sum() > 0
    second = build.engine(cfg)
    second.load_state_dict(state)
    for _ in range(6):
        second.step()
    assert torch.equal(flat(second), flat(whole))


def test_momentum_correction_must_be_a_boolean() -> None:
    with pytest.raises(UserError, match=r"compress\.momentum_correction"):
        config(name="topk", momentum_correction="yes")
