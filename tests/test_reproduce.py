"""`scadles reproduce`: rows schema, resumability, --only, and the paper configs themselves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scadles.cli.reproduce import add_parser, main
from scadles.config.load import config_to_dict, load_config, replace_key
from scadles.errors import UserError
from scadles.reproduce import paper
from scadles.reproduce import runs as repro_runs
from scadles.reproduce.driver import ROW_KEYS, default_config_dir, markdown, reproduce
from scadles.reproduce.experiments import EXPERIMENTS
from scadles.training import runner

TINY = """
[data]
name = "synthetic"
n_train = 600
n_test = 200
[model]
name = "mlp"
width = 8
[devices]
count = 4
[streams]
rates = "normal-S1"
[train]
steps = 6
[eval]
every = 3
target_accuracy = 0.2
[compress]
ratio = 0.1
delta = 0.3
[run]
progress = false
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("configs")
    (d / "headline.toml").write_text(TINY)
    return d


@pytest.fixture(scope="module")
def done(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """One tiny headline reproduction (two comparisons of two 6-step runs), shared."""
    out = tmp_path_factory.mktemp("out")
    return out, reproduce(out, only="headline", config_dir=tiny)


def test_tiny_headline_rows_and_files(done: tuple[Path, list[dict[str, Any]]]) -> None:
    out, rows = done
    assert rows and all(tuple(r) == ROW_KEYS for r in rows)
    for r in rows:
        assert r["experiment"] == "headline" and isinstance(r["quantity"], str)
        assert r["paper"] is None or isinstance(r["paper"], float)
        assert r["ours"] is None or isinstance(r["ours"], float)
        assert isinstance(r["unit"], str) and isinstance(r["note"], str)
        assert r["setting"] == "ResNet152" and r["metric"] == "top1"
        assert "top-1 (paper: top-5)" in r["note"]
    assert json.loads((out / "reproduction.json").read_text()) == rows  # a top-level list
    speed = next(r for r in rows if r["quantity"] == "speedup")
    assert speed["paper"] == 3.29
    comp = json.loads((out / "headline" / "own-size" / "comparison.json").read_text())
    assert speed["ours"] == comp["speedup"]
    delta = next(r for r in rows if r["quantity"] == "accuracy delta")
    assert delta["ours"] == pytest.approx(100 * comp["accuracy_delta"])
    assert comp["runs"]["scadles"]["steps"] == 6
    dense = json.loads((out / "headline" / "dense" / "comparison.json").read_text())
    assert dense["runs"]["ddl"]["dir"] == comp["runs"]["ddl"]["dir"]  # one DDL run, reused
    assert dense["runs"]["scadles"]["compressed_fraction"] == 0.0
    assert "| speedup | 3.29 |" in (out / "reproduction.md").read_text()


def test_second_call_reuses_finished_runs(
    done: tuple[Path, list[dict[str, Any]]], tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, first = done
    calls: list[Path] = []
    real = runner.run  # the module reproduce's runs call through

    def counting(cfg: Any, where: Path, **kw: Any) -> dict[str, Any]:
        calls.append(where)
        return dict(real(cfg, where, **kw))

    monkeypatch.setattr(runner, "run", counting)
    summary = out / "headline" / "own-size" / "scadles" / "summary.json"
    mtime = summary.stat().st_mtime_ns
    assert reproduce(out, only="headline", config_dir=tiny) == first
    assert calls == [] and summary.stat().st_mtime_ns == mtime
    # an interrupted run (no summary.json) is run again, the others are not
    summary.unlink()
    assert reproduce(out, only="headline", config_dir=tiny) == first  # deterministic
    assert calls == [summary.parent]


def test_other_configuration_goes_beside_not_over(
    done: tuple[Path, list[dict[str, Any]]], tiny: Path
) -> None:
    out, first = done
    summary = out / "headline" / "own-size" / "ddl" / "summary.json"
    before = summary.read_text()
    rows = reproduce(out, only="headline", config_dir=tiny, overrides=["train.lr=0.05"])
    assert summary.read_text() == before
    beside = sorted((out / "headline" / "own-size").glob("ddl@*"))
    assert len(beside) == 1 and (beside[0] / "summary.json").is_file()
    assert json.loads((beside[0] / "config.json").read_text())["train"]["lr"] == 0.05
    assert rows != first
    # both configurations are now finished: asking for either again trains nothing
    assert reproduce(out, only="headline", config_dir=tiny) == first


def test_budget_scale(tiny: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny / "headline.toml")
    assert repro_runs.scaled(cfg, 0.5).train.steps == 3
    assert repro_runs.scaled(cfg, 0.01).train.steps == 1
    timed = replace_key(cfg, "train.max_time_s", 100.0)
    assert repro_runs.scaled(timed, 0.25).train.max_time_s == 25.0
    with pytest.raises(UserError, match="budget_scale"):
        reproduce(tmp_path, only="headline", config_dir=tiny, budget_scale=0.0)


def test_unknown_only_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--only: unknown experiment 'table9'; known: headline"):
        reproduce(tmp_path, only="table9")
    assert not (tmp_path / "reproduction.json").exists()


def test_main_analytic_experiments_merge(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    threads = torch.get_num_threads()
    for name in ("table2", "fig1"):
        argv = ["reproduce", "--out", str(tmp_path), "--only", name, "--quiet", "--threads", "2"]
        assert main(p.parse_args(argv)) == 0
    assert torch.get_num_threads() == threads  # restored
    rows = json.loads((tmp_path / "reproduction.json").read_text())
    assert [r["experiment"] for r in rows] == ["table2"] * 12 + ["fig1"] * 12
    cell = next(r for r in rows if r["quantity"] == "ResNet152 S=600 T=1000")
    assert (cell["paper"], cell["ours"]) == (2.06, pytest.approx(2.0617, abs=1e-4))


def test_markdown_ratio_column() -> None:
    rows = [
        {"experiment": "x", "quantity": "q", "paper": 2.0, "ours": 3.0, "unit": "x", "note": ""}
    ]
    rows.append(rows[0] | {"quantity": "r", "paper": None})
    text = markdown(rows)
    assert (
        "| — | q | 2 | 3 | 1.50 | x | — |  |" in text and "| — | r | — | 3 | — | x | — |  |" in text
    )
    text = markdown([rows[0] | {"setting": "VGG19", "metric": "top1"}])
    assert "| VGG19 | q | 2 | 3 | 1.50 | x | top-1 |  |" in text


def test_paper_configs_load_and_share_the_headline() -> None:
    d = default_config_dir()
    names = {"headline", "table4", "table5", "table6", "fig6", "fig8"}
    assert {p.stem for p in d.glob("*.toml")} == names
    cfgs = {n: load_config(d / f"{n}.toml") for n in names}
    h = cfgs["headline"]
    s1 = "authors-normal-S1"  # paper.RATE_SETS["S'1"]: the authors' S'1 list
    assert (h.devices.count, h.streams.rates.preset, h.clock.profile) == (16, s1, "paper")
    assert (h.compress.name, h.compress.ratio, h.compress.delta) == (None, 0.1, 0.3)
    assert (h.policy.batch, h.buffer.policy, h.clock.emulate_params) == (64, None, None)
    assert cfgs["table4"].clock.emulate_params == "resnet152"
    for cfg in cfgs.values():  # the paper's ResNet152 decay [paper 4.3], in sample-epochs
        assert (cfg.train.milestones, cfg.train.gamma) == ((75.0, 150.0, 225.0), 0.2)
    assert cfgs["fig8"].devices.count == 10 and cfgs["fig8"].devices.partition == "label_blocks"
    # table6 at S'1 is the headline run itself, so it is trained once
    t6 = replace_key(cfgs["table6"], "streams.rates", paper.RATE_SETS["S'1"])
    assert config_to_dict(t6) == config_to_dict(h)
    assert set(EXPERIMENTS) >= {"headline", "table2", "fig1", "table4", "table5", "table6"}
