"""TensorBoard writer: the scalars read back from the event file equal the records' fields."""

from __future__ import annotations

import re
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from scadles.errors import UserError
from scadles.report.records import EvalReport, StepReport
from scadles.report.tensorboard import TensorBoardWriter

NEEDS_TB = "the tensorboard extra is not installed"

STEP = StepReport(
    step=1, sim_time_s=1.5, step_time_s=1.5, wait_s=0.25, compute_s=0.5, comm_s=0.75, lr=0.1,
    loss=2.3, prequential_acc=0.125, batch_total=96, batch_sizes=[32, 64], buffer_total=10,
    buffer_sizes=[4, 6], arrived=106, dropped=0, bytes_sent=4096.0, floats_sent=1024.0,
    compressed=True, epoch=0.05, injected=3, injection_bytes=120.0, host_s=0.01, switch_signal=0.25,
)  # fmt: skip
EVAL = EvalReport(
    step=2, sim_time_s=3.0, epoch=0.1, top1=0.5, top5=0.875, loss=1.9, samples_trained=200
)


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Return every scalar series in the log directory as tag -> [(step, value)]."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_scalars_read_back_under_step_and_eval_tags(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    steps = [STEP, replace(STEP, step=2, loss=2.0, compressed=False, sim_time_s=3.0)]
    with TensorBoardWriter(tmp_path) as tb:
        for s in steps:
            tb.write(s)
        tb.write(EVAL)
    got = read_scalars(tmp_path)
    not_scalar = ("step", "batch_sizes", "buffer_sizes", "choice")  # choice: text
    numeric = [f.name for f in fields(StepReport) if f.name not in not_scalar]
    want = {f"step/{n}": [(s.step, float(getattr(s, n))) for s in steps] for n in numeric}
    want |= {f"eval/{f.name}": [(2, float(getattr(EVAL, f.name)))] for f in fields(EVAL)[1:]}
    assert got.keys() == want.keys()
    for tag, series in want.items():  # event files hold float32
        assert [s for s, _ in got[tag]] == [s for s, _ in series], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in series], rel=1e-6), tag
    assert got["step/compressed"] == [(1, 1.0), (2, 0.0)]


def test_write_rejects_other_objects_and_closed_writers(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    tb = TensorBoardWriter(tmp_path)
    with pytest.raises(TypeError, match="StepReport or EvalReport"):
        tb.write({"step": 1})  # type: ignore[arg-type]
    tb.close()
    with pytest.raises(ValueError, match="closed"):
        tb.write(EVAL)


def test_missing_package_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(UserError, match=re.escape("pip install 'scadles[tensorboard]'")):
        TensorBoardWriter(tmp_path)
    assert not list(tmp_path.iterdir())


def test_run_tensorboard_flag_writes_every_step_and_eval(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason=NEEDS_TB)
    import json

    from scadles.cli.main import main as cli_main

    tiny = [
        "--set", "data.name=synthetic", "--set", "data.n_train=600", "--set", "data.n_test=200",
        "--set", "model.name=mlp", "--set", "devices.count=2", "--set", "train.steps=6",
        "--set", "eval.every=2",
    ]  # fmt: skip
    out = tmp_path / "run"
    assert cli_main(["run", *tiny, "--out", str(out), "--quiet", "--tensorboard"]) == 0
    series = read_scalars(out / "tensorboard")
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert [s for s, _ in series["step/loss"]] == [r["step"] for r in steps]
    assert [v for _, v in series["step/loss"]] == pytest.approx([r["loss"] for r in steps], 1e-6)
    assert [v for _, v in series["eval/top1"]] == pytest.approx([r["top1"] for r in evals], 1e-6)
