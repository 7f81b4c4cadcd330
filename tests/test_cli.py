"""The command-line contract: files written, summary keys, exit statuses, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scadles.cli.main import main

FAST = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=2000",
    "--set", "data.n_test=500",
    "--set", "model.name=mlp",
    "--set", "devices.count=4",
    "--set", "train.steps=12",
    "--set", "eval.every=4",
    "--set", "eval.target_accuracy=0.3",
]  # fmt: skip
SUMMARY_KEYS = {
    "policy", "mode", "steps", "samples_trained", "sim_time_s", "host_seconds", "final_accuracy",
    "final_top5", "best_accuracy", "target_accuracy", "time_to_target_s", "steps_to_target",
    "bytes_sent", "floats_sent", "compressed_fraction", "buffer_peak_samples",
    "buffer_final_samples", "samples_arrived", "samples_dropped", "samples_injected",
    "wait_time_s",
}  # fmt: skip


def read_jsonl(p: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_run_writes_the_contract_files(tmp_path: Path) -> None:
    assert main(["run", *FAST, "--out", str(tmp_path), "--quiet"]) == 0
    for name in ("config.json", "steps.jsonl", "evals.jsonl", "summary.json"):
        assert (tmp_path / name).is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["steps"] == 12 and len(read_jsonl(tmp_path / "steps.jsonl")) == 12
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    a = summary
    assert a["samples_arrived"] == a["samples_trained"] + a["samples_dropped"] + a["samples_held"]
    evals = read_jsonl(tmp_path / "evals.jsonl")
    assert [e["step"] for e in evals] == [0, 4, 8, 12]


def test_same_seed_gives_identical_records(tmp_path: Path) -> None:
    for d in ("a", "b"):
        assert main(["run", *FAST, "--out", str(tmp_path / d), "--quiet"]) == 0

    def strip(rows: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        return [{k: v for k, v in r.items() if k != "host_s"} for r in rows]

    a, b = (read_jsonl(tmp_path / d / "steps.jsonl") for d in ("a", "b"))
    assert strip(a) == strip(b)
    assert read_jsonl(tmp_path / "a" / "evals.jsonl") == read_jsonl(tmp_path / "b" / "evals.jsonl")


def test_compare_writes_comparison_and_plots(tmp_path: Path) -> None:
    assert main(["compare", *FAST, "--out", str(tmp_path), "--quiet"]) == 0
    comp = json.loads((tmp_path / "comparison.json").read_text())
    assert {"target_accuracy", "runs", "speedup", "accuracy_delta"} <= comp.keys()
    assert set(comp["runs"]) == {"scadles", "ddl"}
    assert (tmp_path / "comparison.md").read_text().count("|") > 10
    for png in ("accuracy_vs_time.png", "buffer.png", "bytes_sent.png", "batch_sizes.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert (tmp_path / "ddl" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "streams.rates=[1, 2]"], "streams.rates"),
        (["--set", "streams.rate=3"], "did you mean 'streams.rates'"),
        (["--set", "model.name=vgg99"], "model.name"),
        (["--set", "eval.target_accuracy=1.5"], "eval.target_accuracy"),
        (["--set", "data.name=npz", "--set", "data.path=/nonexistent.npz"], "data.path"),
        (["--set", "streams.rates=[0, 1, 2, 3]", "--set", "devices.count=4"], "streams.rates"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *args, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_bad_policy_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", *FAST, "--policies", "scadles,foo", "--out", str(tmp_path)]) == 2
    assert "--policies" in capsys.readouterr().err


def test_process_exit_status_and_config_command(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "scadles.cli"]
    bad = subprocess.run(
        [*exe, "run", "--set", "train.lr=-1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "train.lr" in bad.stderr
    ok = subprocess.run([*exe, "config", "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["policy"]["name"] == "scadles"


def test_injection_counts_exposure_and_label_view(tmp_path: Path) -> None:
    args = [
        *FAST,
        "--set", "devices.count=10",
        "--set", "devices.partition=label_blocks",
        "--set", "policy.name=ddl",
        "--set", "train.steps=3",
    ]  # fmt: skip
    assert main(["run", *args, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert plain["samples_injected"] == 0 and plain["exposure"] == 0.0
    inj = [*args, "--set", "inject.name=peers", "--set", "inject.alpha=0.25"]
    inj += ["--set", "inject.beta=0.25"]
    assert main(["run", *inj, "--out", str(tmp_path / "inj"), "--quiet"]) == 0
    s = json.loads((tmp_path / "inj" / "summary.json").read_text())
    # 10 devices, ceil(0.25 * 10) = 3 peers, floor(0.25 * 64) = 16 rows from each: 48 per device
    assert s["samples_injected"] == 3 * 10 * 48
    assert s["exposure"] == 0.75
    assert s["samples_arrived"] == s["samples_trained"] + s["samples_dropped"] + s["samples_held"]
    rows = read_jsonl(tmp_path / "inj" / "steps.jsonl")
    assert all(r["batch_sizes"] == [112] * 10 for r in rows)
    counts = (tmp_path / "inj" / "label_counts.csv").read_text().splitlines()
    assert len(counts) == 11 and counts[1].split(",")[2] == "0"
    assert (tmp_path / "inj" / "label_distribution.png").stat().st_size > 1000


# --- one-line errors about pipes and files; output files and streams ---------------------------

EXE = [sys.executable, "-m", "scadles.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=600)


def one_line_error(p: subprocess.CompletedProcess[str], needle: str) -> None:
    err = p.stderr.strip()
    assert p.returncode == 2, p.stderr
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_config_into_a_closed_pipe_exits_quietly() -> None:
    proc = subprocess.Popen([*EXE, "config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line, as `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_config_piped_to_head() -> None:
    script = f"{sys.executable} -m scadles.cli config | head -1; exit ${{PIPESTATUS[0]}}"
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "[data]\n" and p.stderr == ""


def test_out_naming_a_file_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("keep")
    one_line_error(run_cli("run", *FAST, "--out", str(f)), f"--out {f}: is a file")
    one_line_error(run_cli("run", *FAST, "--out", str(f / "sub")), "is a file")
    assert f.read_text() == "keep"


def test_out_nobody_can_write_exits_2() -> None:
    one_line_error(run_cli("run", *FAST, "--out", "/proc/self/run"), "cannot write in /proc")


def test_rerun_into_a_used_folder_needs_force(tmp_path: Path) -> None:
    assert main(["run", *FAST, "--out", str(tmp_path), "--quiet"]) == 0
    one_line_error(run_cli("run", *FAST, "--out", str(tmp_path), "--quiet"), "--force")
    assert main(["run", *FAST, "--out", str(tmp_path), "--quiet", "--force"]) == 0
    assert len(read_jsonl(tmp_path / "steps.jsonl")) == 12


def test_tensorboard_missing_is_refused_before_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    out = tmp_path / "run"
    assert main(["run", *FAST, "--out", str(out), "--quiet", "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'scadles[tensorboard]'" in err and "\n" not in err
    assert not out.exists()


def test_output_files_are_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert main(["compare", *FAST, "--out", str(tmp_path), "--quiet"]) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"comparison.json", "summary.json", "config.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
        p.name: "0o644" for p in files
    }


def test_results_on_stdout_progress_on_stderr(tmp_path: Path) -> None:
    p = run_cli("run", *FAST, "--out", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["steps"] == 12  # stdout is the summary and nothing else
    assert "100.0%" in p.stderr


def test_launch_prints_the_summary_as_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scadles.cli import launch as cli_launch

    assert main(["run", *FAST, "--out", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    job = tmp_path / "job"

    def fake_launch(nproc: int, rest: list[str], **flags: object) -> int:
        job.mkdir()
        (job / "summary.json").write_text((tmp_path / "run" / "summary.json").read_text())
        return 0

    monkeypatch.setattr(cli_launch, "launch", fake_launch)
    assert main(["launch", "--nproc", "2", *FAST, "--out", str(job)]) == 0
    assert json.loads(capsys.readouterr().out) == printed
