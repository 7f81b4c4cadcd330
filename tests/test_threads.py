"""--threads: the command line sets torch's threads (the library never does), records them in the
summary with the clock profile and the parameter count communication was charged at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import scadles
from scadles.cli import args as cli_args
from scadles.cli import launch as cli_launch
from scadles.cli.main import main
from scadles.nn import param_count

TINY = [
    "data.name=synthetic", "data.n_train=600", "data.n_test=200", "model.name=mlp",
    "devices.count=2", "train.steps=3", "eval.every=3",
]  # fmt: skip
SETS = [a for kv in TINY for a in ("--set", kv)]


def summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


@pytest.mark.parametrize("n", [1, 2])
def test_run_threads_option_is_used_and_recorded(n: int, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    assert main(["run", *SETS, "--threads", str(n), "--out", str(tmp_path), "--quiet"]) == 0
    assert summary(tmp_path)["threads"] == n
    assert torch.get_num_threads() == before  # an in-process caller gets its setting back


@pytest.mark.parametrize("command", ["run", "compare", "sweep", "launch"])
def test_bad_thread_count_exits_2_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"sweep": ["--grid", "train.lr=0.1"], "launch": ["--nproc", "1"]}.get(command, [])
    argv = [command, *SETS, *extra, "--threads", "0", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--threads must be >= 1, got 0" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_compare_and_sweep_record_the_threads(tmp_path: Path) -> None:
    assert main(["compare", *SETS, "--threads", "1", "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert {summary(tmp_path / "c" / p)["threads"] for p in ("scadles", "ddl")} == {1}
    grid = ["--grid", "train.lr=0.1"]
    assert main(["sweep", *SETS, *grid, "--threads", "1", "--out", str(tmp_path / "s")]) == 0
    (point,) = [d for d in (tmp_path / "s").iterdir() if d.is_dir()]
    assert summary(point)["threads"] == 1


def test_launch_passes_threads_to_every_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_launch(nproc: int, rest: list[str], **flags: Any) -> int:
        seen.update(nproc=nproc, rest=rest, **flags)
        return 0

    monkeypatch.setattr(cli_launch, "launch", fake_launch)
    out = str(tmp_path / "job")
    assert main(["launch", "--nproc", "2", *SETS, "--threads", "3", "--out", out]) == 0
    i = seen["rest"].index("--threads")
    assert seen["rest"][i + 1] == "3" and seen["threads"] == 3


def test_default_threads_is_one_unless_omp_num_threads_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli_args.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli_args.default_threads() == 3  # the user's own setting
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    assert cli_args.default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert main(["run", *SETS, "--out", str(tmp_path), "--quiet"]) == 0
    assert summary(tmp_path)["threads"] == 1


def test_the_library_leaves_threads_alone_and_records_them() -> None:
    before = torch.get_num_threads()
    cfg = scadles.load_config(None, TINY)
    s = scadles.run(cfg, out=None)
    assert torch.get_num_threads() == before and s["threads"] == before


def test_summary_records_clock_profile_and_charged_size(tmp_path: Path) -> None:
    cfg = scadles.load_config(None, [*TINY, "clock.profile=uniform", "clock.emulate_params=12345"])
    s = scadles.run(cfg, out=None)
    assert s["clock_profile"] == "uniform" and s["comm_params"] == 12345
    toml = tmp_path / "plain.toml"  # no clock.emulate_params: the model's own size
    toml.write_text("[train]\nsteps = 2\n[eval]\nevery = 2\n[devices]\ncount = 2\n")
    plain = scadles.load_config(toml, ["data.name=synthetic", "data.n_train=300", "data.n_test=50"])
    assert plain.clock.emulate_params is None
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 10))
    data = scadles.Dataset.from_tensors(
        torch.randn(64, 20), torch.randint(0, 10, (64,)), torch.randn(16, 20), torch.arange(16) % 10
    )
    s = scadles.run(plain, model=model, data=data, out=None)
    assert s["clock_profile"] == plain.clock.profile and s["comm_params"] == 210 == param_count(
        model
    )
