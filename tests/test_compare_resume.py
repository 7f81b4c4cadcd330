"""An interrupted comparison resumes: finished policies are reused, an unfinished one continues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import scadles
from scadles.cli.main import main
from scadles.errors import UserError

SETS = [
    "data.name=synthetic",
    "data.n_train=400",
    "data.n_test=100",
    "model.name=mlp",
    "model.width=8",
    "devices.count=4",
    "train.steps=6",
    "eval.every=2",
]


class _Stop(Exception):
    pass


def without_host_times(comp: dict[str, Any]) -> dict[str, Any]:
    runs = {p: {k: v for k, v in s.items() if k != "host_seconds"} for p, s in comp["runs"].items()}
    return dict(comp, runs=runs)


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_interrupted_compare_resumes_where_it_stopped(tmp_path: Path) -> None:
    cfg = scadles.load_config(None, SETS)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    scadles.compare(cfg, out=whole)

    def stop_in_ddl(done: float, total: float, text: str) -> None:
        if text.startswith("ddl") and done >= 3:  # after ddl's step-3 checkpoint
            raise _Stop

    with pytest.raises(_Stop):
        scadles.compare(cfg, out=cut, checkpoint_every=3, progress=stop_in_ddl)
    assert (cut / "scadles" / "summary.json").is_file()
    stopped = cut / "ddl" / "summary.json"  # none, or one marked "interrupted"
    assert not stopped.exists() or json.loads(stopped.read_text())["interrupted"] is True
    first = stamps(cut / "scadles")
    seen: list[tuple[float, str]] = []

    def record(done: float, total: float, text: str) -> None:
        seen.append((done, text))

    scadles.compare(cfg, out=cut, checkpoint_every=3, resume=True, progress=record)
    assert stamps(cut / "scadles") == first  # the finished policy is not run again
    assert seen[0] == (4, "ddl step 4")  # ddl continues after its checkpoint
    rows = (cut / "ddl" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    a, b = (json.loads((d / "comparison.json").read_text()) for d in (whole, cut))
    assert without_host_times(a) == without_host_times(b)


def test_resume_reruns_a_policy_of_another_config(tmp_path: Path) -> None:
    scadles.compare(scadles.load_config(None, SETS), out=tmp_path, policies=["ddl"])
    longer = scadles.load_config(None, [*SETS, "train.steps=8"])
    comp = scadles.compare(longer, out=tmp_path, policies=["ddl"], resume=True)
    assert comp["runs"]["ddl"]["steps"] == 8


def test_non_empty_out_needs_resume_or_force(tmp_path: Path) -> None:
    cfg = scadles.load_config(None, SETS)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--out"):
        scadles.compare(cfg, out=tmp_path, policies=["ddl"])
    scadles.compare(cfg, out=tmp_path, policies=["ddl"], force=True)
    assert (tmp_path / "ddl" / "summary.json").is_file()


def test_cli_compare_resume_says_what_it_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["compare", *(a for s in SETS for a in ("--set", s)), "--out", str(tmp_path)]
    args += ["--policies", "ddl", "--quiet", "--checkpoint-every", "3"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--out" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert err == f"compare: reusing {tmp_path / 'ddl'} (finished, same config)\n"
    assert main([*args[:-1], "0"]) == 2
