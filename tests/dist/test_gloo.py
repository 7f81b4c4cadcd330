"""Real mode vs simulator: N gloo processes on loopback end with the simulator's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scadles.cli.main import main

pytestmark = pytest.mark.dist

BASE = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=2000",
    "--set", "data.n_test=200",
    "--set", "model.name=mlp",
    "--set", "devices.count=4",
    "--set", "train.steps=20",
    "--set", "eval.every=10",
    "--set", "streams.rates=[20, 40, 64, 90]",
]  # fmt: skip
TOPK = ["--set", "compress.name=topk", "--set", "compress.policy=scadles"]
BN = ["--set", "model.norm=batch"]
POWERSGD = [
    "--set",
    "compress.name=powersgd",
    "--set",
    "compress.rank=2",
    "--set",
    "compress.policy=fixed",
]
ACCORDION = [
    "--set",
    "compress.name=topk",
    "--set",
    "compress.policy=accordion",
    "--set",
    "compress.eta=0.1",
]
CODE = [
    "--set",
    "compress.name=topk",
    "--set",
    "compress.policy=code",
    "--set",
    "compress.delta=0.2",
]
MC = ["--set", "compress.momentum_correction=true", "--set", "compress.momentum_masking=false"]


def params(run: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(run / "model.pt")
    return state


@pytest.mark.parametrize(
    ("nproc", "extra"),
    [
        (2, []),
        (4, []),
        (2, TOPK),
        (4, TOPK),
        (2, BN),
        (2, TOPK + MC),
        (4, POWERSGD),
        (2, ACCORDION),
        (2, CODE),
    ],
    ids=[
        "2-dense",
        "4-dense",
        "2-topk",
        "4-topk",
        "2-dense-batchnorm",
        "2-topk-momentum-corr",
        "4-powersgd",
        "2-accordion",
        "2-code-rule",
    ],
)
def test_gloo_processes_match_the_simulator(nproc: int, extra: list[str], tmp_path: Path) -> None:
    args = [*BASE, *extra]
    assert main(["run", *args, "--out", str(tmp_path / "sim"), "--quiet"]) == 0
    assert main(["launch", "--nproc", str(nproc), *args, "--out", str(tmp_path / "dist")]) == 0
    sim, real = params(tmp_path / "sim"), params(tmp_path / "dist")
    assert sim.keys() == real.keys()
    for name in sim:
        assert torch.allclose(sim[name], real[name], atol=1e-5, rtol=0), name
    steps = (tmp_path / "dist" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 20


def test_device_count_must_divide_over_processes(tmp_path: Path) -> None:
    args = [*BASE, "--set", "devices.count=3", "--set", "streams.rates=[20, 40, 64]"]
    assert main(["launch", "--nproc", "2", *args, "--out", str(tmp_path)]) == 2


def test_time_aware_ranks_pick_the_simulators_exchanges(tmp_path: Path) -> None:
    # Arrange: a slow link and frequent probes, so that the choice changes during the run
    args = [
        *BASE,
        *["--set", "compress.policy=time_aware", "--set", "compress.probe_every=3"],
        *["--set", "clock.emulate_params=default", "--set", "clock.bandwidth_bps=1e6"],
    ]
    # Act
    assert main(["run", *args, "--out", str(tmp_path / "sim"), "--quiet"]) == 0
    assert main(["launch", "--nproc", "2", *args, "--out", str(tmp_path / "dist")]) == 0

    # Assert: the same exchange at every step (ranks agree, or the vote stops the run), and the
    # same parameters
    def choices(run: Path) -> list[str]:
        lines = (run / "steps.jsonl").read_text().splitlines()
        return [json.loads(x)["choice"] for x in lines]

    sim, real = choices(tmp_path / "sim"), choices(tmp_path / "dist")
    assert real == sim and len(set(sim)) >= 2, sim
    a, b = params(tmp_path / "sim"), params(tmp_path / "dist")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), name
