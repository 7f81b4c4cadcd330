"""Timing model against hand-computed numbers and loop oracles; profiles and CSV checks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import scadles
from scadles import clock, timing
from scadles.clock import (
    DeviceProfiles,
    allgather_time,
    allreduce_time,
    compute_time,
    emulated_bytes,
    make_profiles,
    step_time,
)
from scadles.errors import UserError
from scadles.training import build

HEADER = "seconds_per_sample,overhead_s,uplink_bps,downlink_bps,latency_s"


def _profiles(up: list[float], down: list[float], lat: list[float]) -> DeviceProfiles:
    k = len(up)
    ones = _f64([1.0] * k)
    return DeviceProfiles(1e-3 * ones, 0.01 * ones, _f64(up), _f64(down), _f64(lat), 0 * ones)


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _allgather_oracle(p: DeviceProfiles, nbytes: list[float]) -> float:
    """Loop version of the documented ring all-gather formula."""
    k, total = len(nbytes), sum(nbytes)
    worst = 0.0
    for i in range(k):
        recv = (total - nbytes[i]) * 8 / float(p.downlink_bps[i])
        send = (total - nbytes[(i + 1) % k]) * 8 / float(p.uplink_bps[i])
        worst = max(worst, recv, send)
    return worst + (k - 1) * float(p.latency_s.max())


@pytest.mark.parametrize("name", ["transformer", "resnet152", "vgg19_bn"])
def test_paper_sync_times_on_8_devices_within_10_percent(name: str) -> None:
    params, tensors, paper_s = clock.PAPER_SYNC[name]
    p = make_profiles("paper", 8)
    nbytes = torch.full((8,), emulated_bytes(1, params))
    got = clock.comm_time(p, "allreduce", nbytes, tensors)
    assert got == pytest.approx(paper_s, rel=0.10)


def test_paper_fit_uses_all_three_points_not_one() -> None:
    p = make_profiles("paper", 8)
    vgg, transformer = clock.PAPER_SYNC["vgg19_bn"], clock.PAPER_SYNC["transformer"]
    # the old one-point fit (3.087 Gbps, no message cost) gave VGG19 2.49 s, Transformer 0.22 s
    assert allreduce_time(p, 4.0 * vgg[0], vgg[1]) < 1.6
    assert allreduce_time(p, 4.0 * transformer[0], transformer[1]) < 0.135
    assert 5.86e9 < clock.PAPER_EFFECTIVE_BPS < 5.861e9  # the docstring's solved constants
    assert pytest.approx(1.0018e-3, rel=1e-4) == clock.PAPER_MESSAGE_S


def test_no_line_in_bytes_fits_the_three_paper_times() -> None:
    rows = list(clock.PAPER_SYNC.values())
    a = torch.tensor([[1.0, 4.0 * n] for n, _, _ in rows], dtype=torch.float64)
    t = torch.tensor([s for _, _, s in rows], dtype=torch.float64)
    fit = torch.linalg.lstsq(a / t[:, None], torch.ones(3, dtype=torch.float64)).solution
    assert ((a @ fit - t).abs() / t).max() > 0.10  # why the per-message cost is there


def test_paper_table_agrees_with_the_model_sizes() -> None:
    from scadles.nn.sizes import PAPER_SIZES

    for name, (params, tensors) in PAPER_SIZES.items():
        assert clock.PAPER_SYNC[name][:2] == (params, tensors)


def test_message_cost_by_hand() -> None:
    p = make_profiles("paper", 4)
    base = allreduce_time(p, 1e6)
    assert allreduce_time(p, 1e6, 11) - base == pytest.approx(10 * clock.PAPER_MESSAGE_S)
    gather = allgather_time(p, torch.full((4,), 1e5))
    got = allgather_time(p, torch.full((4,), 1e5), 11) - gather
    assert got == pytest.approx(5 * clock.PAPER_MESSAGE_S)


def test_paper_compute_of_batch_64_is_0_15_s_and_iteration_1_2_s() -> None:
    p = make_profiles("paper", 8)
    c = compute_time(p, torch.full((8,), 64))
    assert torch.allclose(c, torch.full((8,), 0.15, dtype=torch.float64), rtol=0, atol=1e-12)
    resnet = clock.PAPER_SYNC["resnet152"]
    it = step_time(torch.zeros(8), c, allreduce_time(p, 4.0 * resnet[0], resnet[1]))
    assert it == pytest.approx(1.2, rel=1e-12)


def test_uniform_allreduce_by_hand() -> None:
    p = make_profiles("uniform", 4)
    # 2*3/4 * 8e6 bits / 1e8 bps + 2*3 * 5 ms = 0.12 + 0.03
    assert allreduce_time(p, 1e6) == pytest.approx(0.15, rel=1e-12)


def test_allreduce_uses_slowest_link_and_largest_latency() -> None:
    p = _profiles([1e9, 2e8, 1e9], [1e9, 1e9, 5e8], [1e-3, 2e-3, 4e-3])
    expected = 2 * 2 / 3 * 3e6 * 8 / 2e8 + 2 * 2 * 4e-3
    assert allreduce_time(p, 3e6) == pytest.approx(expected, rel=1e-12)


def test_single_device_communicates_for_free() -> None:
    p = make_profiles("uniform", 1)
    assert allreduce_time(p, 1e9) == 0.0
    assert allgather_time(p, torch.tensor([1e9])) == 0.0


def test_allgather_matches_loop_oracle_on_heterogeneous_devices() -> None:
    p = _profiles([1e8, 5e7, 2e8, 1e8], [2e8, 1e8, 1e8, 4e7], [1e-3, 3e-3, 2e-3, 0.0])
    nbytes = [1e5, 4e5, 0.0, 2.5e5]
    got = allgather_time(p, torch.tensor(nbytes))
    assert got == pytest.approx(_allgather_oracle(p, nbytes), rel=1e-12)


def test_allgather_by_hand_two_devices() -> None:
    p = _profiles([1e6, 2e6], [4e6, 1e6], [0.01, 0.02])
    # recv: dev0 gets 200 B over 4e6, dev1 gets 100 B over 1e6; send: dev0 sends 100 B (its own)
    # over 1e6, dev1 sends 200 B over 2e6 -> worst 8e-4 s, plus 1 * 0.02 s latency
    assert allgather_time(p, torch.tensor([100.0, 200.0])) == pytest.approx(0.0208, rel=1e-12)


def test_allgather_grows_with_k_for_fixed_per_device_bytes() -> None:
    times = [
        allgather_time(make_profiles("uniform", k), torch.full((k,), 1e5)) for k in range(1, 17)
    ]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_allgather_of_equal_blocks_is_half_an_allreduce() -> None:
    k, n = 8, 8e6
    p = make_profiles("paper", k)
    assert allgather_time(p, torch.full((k,), n / k)) == pytest.approx(
        allreduce_time(p, n) / 2, rel=1e-12
    )


def test_compute_time_is_zero_for_empty_batches() -> None:
    p = make_profiles("uniform", 3)
    got = compute_time(p, torch.tensor([0, 1, 100]))
    expected = torch.tensor([0.0, 0.01 + 2e-4, 0.01 + 100 * 2e-4], dtype=torch.float64)
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=0, atol=1e-15)


def test_step_time_is_slowest_wait_plus_compute_then_comm() -> None:
    wait = torch.tensor([0.5, 0.0, 0.2])
    comp = torch.tensor([0.1, 0.7, 0.3])
    assert step_time(wait, comp, 0.25) == pytest.approx(0.95, rel=1e-6)


def test_overrides_replace_every_device() -> None:
    p = make_profiles(
        "paper", 3, seconds_per_sample=0.5, overhead_s=0.0, bandwidth_bps=1e3, latency_s=0.0
    )
    for t, v in [
        (p.seconds_per_sample, 0.5),
        (p.overhead_s, 0.0),
        (p.uplink_bps, 1e3),
        (p.downlink_bps, 1e3),
        (p.latency_s, 0.0),
    ]:
        assert t.shape == (3,) and t.dtype == torch.float64 and bool((t == v).all())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"bandwidth_bps": 0.0}, "clock.bandwidth_bps"),
        ({"latency_s": -1.0}, "clock.latency_s"),
        ({"overhead_s": math.inf}, "clock.overhead_s"),
    ],
)
def test_bad_overrides_are_user_errors(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        make_profiles("uniform", 2, **kwargs)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(UserError, match="paper, uniform, csv"):
        make_profiles("fast", 2)
    with pytest.raises(UserError, match=r"clock\.csv"):
        make_profiles("csv", 2)
    with pytest.raises(UserError, match=r"devices\.count"):
        make_profiles("paper", 0)


def test_csv_rows_per_device_in_any_column_order(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "latency_s,uplink_bps,downlink_bps,overhead_s,seconds_per_sample\n"
        "0.001,1e8,2e8,0.02,0.003\n"
        "\n"
        "0.002, 5e7 ,1e8,0,0.004\n"
    )
    p = make_profiles("csv", 2, csv=str(f))
    assert p.latency_s.tolist() == [0.001, 0.002]
    assert p.uplink_bps.tolist() == [1e8, 5e7]
    assert p.downlink_bps.tolist() == [2e8, 1e8]
    assert p.overhead_s.tolist() == [0.02, 0.0]
    assert p.seconds_per_sample.tolist() == [0.003, 0.004]


def test_csv_single_row_is_shared_and_overrides_apply(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(f"{HEADER}\n0.001,1e8,1e8,0.01,0.005\n")
    p = make_profiles("csv", 5, csv=str(f), latency_s=0.5)
    assert p.k == 5
    assert p.seconds_per_sample.tolist() == [0.001] * 5
    assert p.latency_s.tolist() == [0.5] * 5


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("0.001,0.01,1e8,1e8,0.005\n0.001,0.01,abc,1e8,0.005\n", ["line 3", "uplink_bps", "'abc'"]),
        ("0.001,0.01,1e8,-5,0.005\n0.001,0.01,1e8,1e8,0.005\n", ["line 2", "downlink_bps", "-5"]),
        ("0.001,0.01,1e8,1e8,nan\n0.001,0.01,1e8,1e8,0.005\n", ["line 2", "latency_s", "nan"]),
        ("0.001,0.01,1e8,1e8\n0.001,0.01,1e8,1e8,0.005\n", ["line 2", "5 comma-separated"]),
        ("0.001,0.01,1e8,1e8,0.005\n" * 3, ["needs 2 device rows", "got 3"]),
    ],
)
def test_bad_csv_rows_are_user_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(f"{HEADER}\n{body}")
    with pytest.raises(UserError) as e:
        make_profiles("csv", 2, csv=str(f))
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg
    for needle in needles:
        assert needle in msg


def test_csv_bad_header_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("seconds_per_sample,overhead_s,uplink_bps,downlink_bps\n0.1,0.1,1,1\n")
    with pytest.raises(UserError, match="header must name the columns"):
        make_profiles("csv", 1, csv=str(f))
    with pytest.raises(UserError, match="file not found"):
        make_profiles("csv", 1, csv=str(tmp_path / "nope.csv"))


def test_emulated_bytes() -> None:
    assert emulated_bytes(1000, None) == 4000.0
    assert emulated_bytes(1000, 60_200_000) == 240_800_000.0
    assert emulated_bytes(10, None, bytes_per_param=2) == 20.0
    with pytest.raises(UserError, match="emulate_params"):
        emulated_bytes(10, 0)


def test_compress_time_by_formula() -> None:
    p = 60_200_000.0
    assert timing.compress_time("topk", p) == pytest.approx(16 * p / 240e9, rel=1e-12)
    assert timing.compress_time("fp16", p) == pytest.approx(6 * p / 240e9, rel=1e-12)
    assert timing.compress_time("powersgd", p, rank=4) == pytest.approx(24 * p / 4.37e12)
    assert timing.compress_time("none", p) == 0.0 == timing.compress_time("identity", p)


def test_virtual_clock_charges_each_compressor_run() -> None:
    p = make_profiles("paper", 4)
    costs = timing.compress_costs(1e6, rank=2)
    wait, b, nbytes = torch.zeros(4), torch.full((4,), 16), torch.full((4,), 4e5)
    free = timing.VirtualClock(p, 3).finish(wait, b, "allgather", nbytes)
    run = ("topk", "fp16")
    charged = timing.VirtualClock(p, 3, costs).finish(wait, b, "allgather", nbytes, run)
    expected = costs["topk"] + costs["fp16"]
    assert charged.compress_s == pytest.approx(expected, rel=1e-12) and expected > 0
    assert charged.step_s == pytest.approx(free.step_s + expected, rel=1e-12)
    assert free.compress_s == 0.0


def test_compressed_run_pays_for_its_compression() -> None:
    sets = ["data.name=synthetic", "data.n_train=600", "data.n_test=200", "model.name=mlp"]
    sets += ["devices.count=2", "policy.name=scadles", "compress.name=topk", "clock.profile=paper"]
    sets += ["compress.policy=fixed", "clock.emulate_params=resnet152"]
    cfg = scadles.load_config(None, sets)
    charged, free = build.engine(cfg), build.engine(cfg)
    assert isinstance(free.clock, timing.VirtualClock)
    assert isinstance(charged.clock, timing.VirtualClock)
    assert charged.clock.messages == 467  # one message per ResNet152 tensor
    free.clock.compress_s = {}
    a, b = charged.step(), free.step()
    topk = timing.compress_time("topk", 60_192_808)
    assert a.compress_s == pytest.approx(topk, rel=1e-12) and b.compress_s == 0.0
    assert a.step_time_s == pytest.approx(b.step_time_s + topk, rel=1e-9)
