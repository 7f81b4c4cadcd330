"""The memory estimate before training: parameters counted without allocating, a refusal in one
line naming the estimate, what is available and the key to change, and normal runs untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

import scadles
from scadles.cli.main import main
from scadles.errors import UserError
from scadles.training import build, memory

TINY = [
    "data.name=synthetic",
    "data.n_train=600",
    "data.n_test=200",
    "model.name=mlp",
    "devices.count=2",
    "train.steps=2",
]


def sets(*extra: str) -> list[str]:
    """Return the CLI arguments --set KEY=VALUE for TINY and extra."""
    return [a for kv in (*TINY, *extra) for a in ("--set", kv)]


def test_huge_width_is_refused_in_one_line_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the demo's cnn1d at width 10^7 (the model build alone asked torch for 1.2 PB)
    out = tmp_path / "run"
    # Act
    status = main(["run", "--set", "model.width=10000000", "--out", str(out), "--quiet"])
    # Assert: exit 2, one line; a traceback from torch's allocator would have exited 1
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("scadles: error: memory: the run needs about ")
    assert " PB (parameters " in err and "is available" in err
    assert err.endswith("lower model.width (now 10000000)")
    assert not out.exists()  # the folder the run made goes again


def test_a_normal_run_is_unaffected(tmp_path: Path) -> None:
    assert main(["run", *sets(), "--out", str(tmp_path / "run"), "--quiet"]) == 0


def test_parameters_of_a_small_mlp_match_a_hand_count() -> None:
    # Arrange: MLP 20 -> 4w -> 4w -> 10 (synthetic data: 20 features, 10 classes), dense DDL
    width, extra = 64, ["model.width=64", "policy.name=ddl", "eval.batch_size=64"]
    cfg = scadles.load_config(None, [*TINY, *extra])
    data = build.dataset(cfg)
    h = 4 * width
    hand = (20 * h + h) + (h * h + h) + (h * 10 + 10)  # weights and biases of the 3 layers
    assert data.input_shape == (20,) and data.num_classes == 10
    # Act
    est = memory.estimate(cfg, data, devices=2)
    # Assert: exact parameter bytes (float32), momentum P, dense gradients 2 P; activations of
    # the 2 x 64 rows: input 20 plus the outputs of fc1, its norm (identity), fc2, its norm, head
    assert est.parameters == 4 * hand
    assert est.optimizer == 4 * hand and est.gradients == 2 * 4 * hand
    assert est.activations == 4 * (2 * 64) * (20 + 4 * h + 10)
    assert 4.0 <= est.total / (4 * hand) <= 6.0  # the stated factor over the parameter bytes


def test_per_device_gradients_grow_with_the_devices_only_when_compressing() -> None:
    # Arrange
    def grads(k: int, *extra: str) -> float:
        cfg = scadles.load_config(None, [*TINY, f"devices.count={k}", *extra])
        return memory.estimate(cfg, build.dataset(cfg), devices=k).gradients

    # Act / Assert: (K, P) per-device copies with Top-k, one (P,) gradient set when dense
    assert grads(8, "compress.name=topk") == 4 * grads(2, "compress.name=topk")
    assert grads(8, "compress.name=none") == grads(2, "compress.name=none")


def test_refusal_names_the_largest_term_and_passes_when_it_fits() -> None:
    # Arrange
    keys = {"parameters": "model.width (now 8)", "optimizer state": "model.width (now 8)"}
    keys |= {"gradients": "devices.count (now 4)", "activations": "policy.b_max (now 64)"}
    est = memory.Estimate(1e9, 1e9, 8e9, 2e9, keys)
    # Act / Assert
    memory.refuse_if_too_large(est, (12_000_000_000, "test"), "here")  # 12 GB >= 12 GB
    memory.refuse_if_too_large(est, None, "here")  # unknown availability: no refusal
    with pytest.raises(UserError) as info:
        memory.refuse_if_too_large(est, (4_000_000_000, "test"), "here")
    msg = str(info.value)
    assert msg == (
        "memory: the run needs about 12 GB (parameters 1 GB, optimizer state 1 GB, gradients "
        "8 GB, activations 2 GB) but 4 GB is available here (test); lower devices.count (now 4)"
    )
    # a user's model already allocated is not counted twice
    memory.refuse_if_too_large(est, (11_000_000_000, "test"), "here", already=1e9)


def test_host_memory_is_known_on_linux() -> None:
    got = memory.host_available()
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo")
    assert got is not None and got[0] > 0
