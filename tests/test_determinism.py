"""Determinism and exact resume over every injection, normalisation, compressor and switch, and
the same run on a loaded machine as on a quiet one.

Each case (one axis varied at a time, plus BatchNorm with peer injection) runs three times through
the runner into its own folder: twice straight with one seed, and once interrupted after a
checkpoint and resumed from the checkpoint file. All three must write the same steps.jsonl (but
for the host seconds), evals.jsonl and model.pt.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from scadles.compress.registry import COMPRESSORS
from scadles.compress.switches import SWITCHES
from scadles.config.load import load_config
from scadles.config.schema import Config
from scadles.data.injectors import INJECTIONS
from scadles.nn.norm import NORMS
from scadles.training import runner

BASE = [
    "data.name=synthetic",
    "data.n_train=600",
    "data.n_test=60",
    "model.name=mlp",
    "model.width=32",
    "devices.count=4",
    "devices.partition=shards",
    "streams.rates=[12, 30, 50, 80]",
    "streams.arrivals=poisson",
    "clock.emulate_params=default",
    "compress.probe_every=2",  # time_aware: measures within the few steps
    "train.steps=6",
    "eval.every=2",
    "run.progress=false",
]
STOP = 3  # the interrupted run stops after its checkpoint at this step
BUILDERS = {id(SWITCHES.get(n)): n for n in reversed(SWITCHES.names())}  # aliases once
CASES: dict[str, list[str]] = {f"inject-{n}": [f"inject.name={n}"] for n in INJECTIONS.names()}
CASES |= {f"norm-{n}": [f"model.norm={n}"] for n in NORMS.names()}
CASES |= {
    f"compressor-{n}": [f"compress.name={n}", "compress.policy=fixed", "compress.rank=2"]
    for n in COMPRESSORS.names()
}
CASES |= {f"switch-{n}": ["compress.name=topk", f"compress.policy={n}"] for n in BUILDERS.values()}
PEERS_BN = ["model.norm=batch", "inject.name=peers", "inject.alpha=0.5"]
CASES["batchnorm-peers"] = PEERS_BN


class Interrupt(Exception):
    """Raised by the progress callback: the run stops as a kill would, after a checkpoint."""


def _files(out: Path) -> tuple[list[dict[str, Any]], list[str], dict[str, torch.Tensor]]:
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    for row in steps:
        row.pop("host_s")  # wall seconds differ run to run
    evals = (out / "evals.jsonl").read_text().splitlines()
    return steps, evals, torch.load(out / "model.pt")


def _same(a: Path, b: Path) -> None:
    (sa, ea, ma), (sb, eb, mb) = _files(a), _files(b)
    assert sa == sb
    assert ea == eb
    assert ma.keys() == mb.keys()
    for name in ma:
        assert torch.equal(ma[name], mb[name]), name


def _interrupted_then_resumed(cfg: Config, out: Path) -> None:
    def stop(done: float, total: float, what: str) -> None:
        if done >= STOP:
            raise Interrupt

    with pytest.raises(Interrupt):
        runner.run(cfg, out, checkpoint_every=STOP, progress=stop)
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    runner.run(cfg, out, checkpoint_every=STOP, resume=True)


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_same_files_and_resume_continues_exactly(case: str, tmp_path: Path) -> None:
    # Arrange
    cfg = load_config(None, [*BASE, *CASES[case]])
    # Act: two straight runs, and one interrupted after its checkpoint and resumed
    runner.run(cfg, tmp_path / "a")
    runner.run(cfg, tmp_path / "b")
    _interrupted_then_resumed(cfg, tmp_path / "c")
    # Assert
    _same(tmp_path / "a", tmp_path / "b")
    _same(tmp_path / "a", tmp_path / "c")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextmanager
def _competing(n: int, seconds: float) -> Iterator[None]:
    """Run n CPU-bound processes beside the body (stopped when it ends)."""
    procs = [mp.get_context("spawn").Process(target=_spin, args=(seconds,)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)  # let them take the cores
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def test_a_loaded_machine_gives_the_quiet_run(tmp_path: Path) -> None:
    # Arrange: BatchNorm with peers on two intra-op threads, the case whose parameters drifted
    # by 1e-8 beside busy processes when its backward accumulated with atomic adds
    over = ["data.n_train=2000", "streams.rates=[120, 300, 500, 800]", "train.steps=8"]
    cfg = load_config(None, [*BASE, *PEERS_BN, *over])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner.run(cfg, tmp_path / "quiet")
        # Act
        with _competing(3, 120.0):
            for i in range(3):
                runner.run(cfg, tmp_path / f"loaded{i}")
    finally:
        torch.set_num_threads(threads)
    # Assert
    for i in range(3):
        _same(tmp_path / "quiet", tmp_path / f"loaded{i}")
