"""Sweeps: each point trains on its own data; reuse only a finished point of the same config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scadles.cli.main import main
from scadles.config.load import Config, load_config
from scadles.data.datasets import Dataset
from scadles.errors import UserError
from scadles.training import build
from scadles.training.sweep import parse_grid, run_sweep

SETS = [
    "data.name=synthetic",
    "data.n_train=400",
    "data.n_test=100",
    "model.name=mlp",
    "model.width=8",
    "devices.count=4",
    "train.steps=3",
    "eval.every=3",
]
FAST = [a for s in SETS for a in ("--set", s)]


def cfg(*extra: str) -> Config:
    return load_config(None, [*SETS, *extra])


def trained_total(point: Path) -> int:
    """Return the number of training samples the point's devices hold (label_counts.csv)."""
    rows = (point / "label_counts.csv").read_text().splitlines()[1:]
    return sum(int(v) for row in rows for v in row.split(",")[1:])


def test_each_point_trains_on_its_own_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real = build.dataset

    def counting(c: Config) -> Dataset:
        built.append(c.data.n_train or 0)
        return real(c)

    monkeypatch.setattr(build, "dataset", counting)
    grid = parse_grid(["data.n_train=200,320", "policy.name=scadles,ddl"])
    rows = run_sweep(cfg(), grid, tmp_path)
    totals = {(r["params"]["data.n_train"], r["params"]["policy.name"]): r for r in rows}
    for (n, _), row in totals.items():
        assert trained_total(Path(row["dir"])) == n  # the point's own n_train, not the base 400
        saved = json.loads((Path(row["dir"]) / "config.json").read_text())
        assert saved["data"]["n_train"] == n
    assert sorted(built) == [200, 320]  # one build per distinct data set, shared by policies


def test_seed_points_draw_their_own_data() -> None:
    from scadles.training.sweep import data_key

    assert data_key(cfg("train.seed=1")) != data_key(cfg("train.seed=2"))
    assert data_key(cfg("train.lr=0.5")) == data_key(cfg())


def test_resume_reruns_points_of_another_config_and_reuses_the_rest(tmp_path: Path) -> None:
    grid = parse_grid(["train.lr=0.1,0.05"])
    run_sweep(cfg(), grid, tmp_path)
    heard: list[str] = []
    rows = run_sweep(cfg("train.steps=4"), grid, tmp_path, resume=True, notify=heard.append)
    assert heard == [] and [r["summary"]["steps"] for r in rows] == [4, 4]
    stamps = {r["dir"]: (Path(r["dir"]) / "summary.json").stat().st_mtime_ns for r in rows}
    again = run_sweep(cfg("train.steps=4"), grid, tmp_path, resume=True, notify=heard.append)
    assert heard == [f"sweep: reusing {r['dir']} (finished, same config)" for r in rows]
    assert [r["summary"] for r in again] == [r["summary"] for r in rows]
    assert {d: (Path(d) / "summary.json").stat().st_mtime_ns for d in stamps} == stamps


def test_force_reruns_every_point(tmp_path: Path) -> None:
    grid = parse_grid(["train.lr=0.1"])
    (row,) = run_sweep(cfg(), grid, tmp_path)
    summary = Path(row["dir"]) / "summary.json"
    before = summary.stat().st_mtime_ns
    run_sweep(cfg(), grid, tmp_path, force=True)
    assert summary.stat().st_mtime_ns != before


def test_non_empty_out_needs_resume_or_force(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UserError, match="--out"):
        run_sweep(cfg(), parse_grid(["train.lr=0.1"]), tmp_path)


def test_cli_sweep_says_what_it_reuses_and_what_came_from_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "partial.toml"
    toml.write_text('[data]\nname = "synthetic"\n[train]\nsteps = 3\n')
    out = tmp_path / "sweep"
    args = ["sweep", str(toml), *FAST, "--grid", "train.lr=0.1,0.05", "--out", str(out), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err == (
        f"config: sections not in {toml}, using the built-in defaults: "
        "streams, buffer, policy, clock, compress, inject, live, run\n"
    )
    point = out / "lr=0.1"
    assert json.loads((point / "config_defaults.json").read_text()) == {
        "sections_from_defaults": [
            "streams", "buffer", "policy", "clock", "compress", "inject", "live", "run"
        ]
    }  # fmt: skip
    assert "config_defaults" not in (point / "config.json").read_text()
    assert main(args) == 2  # non-empty --out: one line
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "\n" not in err
    assert main([*args, "--resume", "--force"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    lines = capsys.readouterr().err.splitlines()[1:]
    assert lines == [
        f"sweep: reusing {out / p} (finished, same config)" for p in ("lr=0.1", "lr=0.05")
    ]
