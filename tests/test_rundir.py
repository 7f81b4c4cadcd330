"""Run directories: a previous run is never overwritten silently, --force replaces only run
files, two writers never share a folder, and an interrupted run leaves a readable folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scadles.config.load import load_config
from scadles.errors import UserError
from scadles.report.html import write_report
from scadles.training import runner
from scadles.training.rundir import LOCK, check_out, clear_run_files, locked

TINY = [
    "data.name=synthetic", "data.n_train=600", "data.n_test=200", "model.name=mlp",
    "devices.count=2", "train.steps=6", "eval.every=2",
]  # fmt: skip
HOLD = """
import sys, time
from pathlib import Path
from scadles.training.rundir import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def lines(p: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in p.read_text().splitlines()]


def hold_lock(out: Path) -> subprocess.Popen[str]:
    """Start a process that holds out's lock until killed; return once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


# --- check_out -------------------------------------------------------------------------------


def test_missing_and_empty_folders_pass_and_nothing_is_created(tmp_path: Path) -> None:
    check_out(tmp_path / "a" / "b", resume=False, force=False)
    assert not (tmp_path / "a").exists()
    check_out(tmp_path, resume=False, force=False)
    (tmp_path / LOCK).write_text("12345\n")  # a stale lock alone is no run
    check_out(tmp_path, resume=False, force=False)


def test_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("keep")
    with pytest.raises(UserError, match=r"^--out .*f: is a file") as e:
        check_out(f, resume=False, force=True)
    with pytest.raises(UserError, match=r"cannot create it, .*f is a file"):
        check_out(f / "sub", resume=False, force=False)
    assert "\n" not in str(e.value) and f.read_text() == "keep"


def test_a_non_empty_folder_needs_resume_or_force(tmp_path: Path) -> None:
    (tmp_path / "steps.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match=r"--out .*: folder is not empty \(steps.jsonl\).*--force"):
        check_out(tmp_path, resume=False, force=False)
    check_out(tmp_path, resume=True, force=False)
    check_out(tmp_path, resume=False, force=True)


def test_a_folder_nobody_can_write_is_refused() -> None:
    with pytest.raises(UserError, match=r"^--out /proc/self/scadles-run: cannot write in"):
        check_out(Path("/proc/self/scadles-run"), resume=False, force=False)


# --- clear_run_files ---------------------------------------------------------------------------


def test_clear_removes_run_files_and_nothing_else(tmp_path: Path) -> None:
    run_files = [
        "config.json", "steps.jsonl", "evals.jsonl", "summary.json", "model.pt",
        "checkpoint.pt", "checkpoint-rank1.pt", "checkpoint-rank1.prev", "label_counts.csv",
        "label_distribution.png", ".summary.json.ab12cd34.tmp", ".checkpoint.pt.77.tmp", LOCK,
    ]  # fmt: skip
    for name in run_files:
        (tmp_path / name).write_text("x")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out").write_text("x")
    others = ["notes.txt", "config.toml", "my_checkpoints", "steps.jsonl.bak"]
    for name in others:
        (tmp_path / name).write_text("mine")
    clear_run_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_clear_keeps_a_lock_another_process_holds(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    proc = hold_lock(tmp_path)
    try:
        with pytest.raises(
            UserError, match=f"another scadles process is writing it .pid {proc.pid}"
        ):
            clear_run_files(tmp_path)
        assert (tmp_path / "summary.json").is_file()
    finally:
        proc.kill()
        proc.wait()


# --- locked --------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    proc = hold_lock(tmp_path)
    try:
        busy = rf"^--out .*: another .* \(pid {proc.pid}\)$"
        with pytest.raises(UserError, match=busy), locked(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait()
    with locked(tmp_path):  # a killed holder's lock is free again
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()


def test_the_runner_holds_the_lock_while_it_writes(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    proc = hold_lock(tmp_path)
    try:
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            runner.run(cfg, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]  # nothing written
    finally:
        proc.kill()
        proc.wait()
    seen = []

    def peek(done: float, total: float, text: str) -> None:
        seen.append((tmp_path / LOCK).read_text().strip())

    runner.run(cfg, tmp_path, progress=peek)
    assert seen == [str(os.getpid())] * 6 and not (tmp_path / LOCK).exists()


def test_the_folder_is_checked_again_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner.locked

    @contextmanager
    def late(out: Path) -> Iterator[None]:
        (out / "summary.json").write_text("{}")  # another run ended between check and lock
        with real(out):
            yield

    monkeypatch.setattr(runner, "locked", late)
    with pytest.raises(UserError, match="not empty"):
        runner.run(load_config(None, TINY), tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["summary.json"]


def test_two_processes_on_one_folder_never_interleave(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [a for kv in TINY for a in ("--set", kv)] + ["--set", "train.steps=40"]
    cmd = [sys.executable, "-m", "scadles.cli", "run", *args, "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2).strip()
    assert "\n" not in err and ("another scadles process" in err or "not empty" in err)
    rows = lines(out / "steps.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41))


# --- the runner ---------------------------------------------------------------------------------


def test_rerun_needs_force_and_force_keeps_other_files(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    runner.run(cfg, tmp_path, checkpoint_every=2)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        runner.run(cfg, tmp_path)
    with pytest.raises(UserError, match="exclude each other"):
        runner.run(cfg, tmp_path, resume=True, force=True)
    runner.run(load_config(None, [*TINY, "train.steps=4"]), tmp_path, force=True)
    assert len(lines(tmp_path / "steps.jsonl")) == 4
    assert not (tmp_path / "checkpoint.pt").exists()  # the old run's checkpoint went
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failed_start_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(UserError, match=r"devices\.count"):
        runner.run(load_config(None, [*TINY, "devices.count=700"]), out)
    assert not out.exists()


class _Boom(Exception):
    pass


@pytest.mark.parametrize("stop", [KeyboardInterrupt, _Boom])
def test_an_interrupted_run_leaves_a_folder_report_reads(
    stop: type[BaseException], tmp_path: Path
) -> None:
    def stop_after_3(done: float, total: float, text: str) -> None:
        if done >= 3:
            raise stop

    with pytest.raises(stop):
        runner.run(load_config(None, TINY), tmp_path, progress=stop_after_3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps"] == 3
    assert [r["step"] for r in lines(tmp_path / "steps.jsonl")] == [1, 2, 3]
    assert [r["step"] for r in lines(tmp_path / "evals.jsonl")] == [0, 2]
    assert summary["evals"] == 2
    assert not (tmp_path / LOCK).exists()
    assert write_report(tmp_path).is_file()


def test_a_finished_run_says_it_was_not_interrupted(tmp_path: Path) -> None:
    summary = runner.run(load_config(None, TINY), tmp_path)
    assert summary["interrupted"] is False
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is False
