"""Binary or non-UTF-8 files given as text inputs (a config, streams.trace, clock.csv, a run's
config.json for --resume, a report's JSON and JSONL) exit 2 with one line naming the key or
argument and the path; never a UnicodeDecodeError traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from scadles.cli.main import main
from scadles.errors import UserError
from scadles.report.records import read_jsonl
from scadles.textfile import decode, read_text
from scadles.training import rundir

TINY = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=600",
    "--set", "data.n_test=200",
    "--set", "model.name=mlp",
    "--set", "devices.count=2",
    "--set", "train.steps=2",
]  # fmt: skip


def random_bytes(path: Path, n: int = 300) -> Path:
    """Write n seeded random bytes to path (0xde first: never valid UTF-8) and return it."""
    path.write_bytes(b"\xde" + random.Random(7).randbytes(n - 1))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """Return the only line on stderr (failing when there are more, or a traceback)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_binary_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = random_bytes(tmp_path / "bin.toml")
    assert main(["config", str(bad)]) == 2
    want = f"scadles: error: config: {bad} is not UTF-8 text (byte 0xde at offset 0)"
    assert one_error_line(capsys) == want


@pytest.mark.parametrize("command", ["config", "run"])
def test_binary_trace_via_set(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = random_bytes(tmp_path / "bin.csv")
    out = ["--out", str(tmp_path / "run"), "--quiet"] if command == "run" else []
    assert main([command, *TINY, "--set", f"streams.trace={bad}", *out]) == 2
    assert one_error_line(capsys).startswith(f"scadles: error: streams.trace: {bad} is not UTF-8")


def test_trace_with_nul_bytes_is_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "nul.csv"
    bad.write_bytes(b"time_s,rate\n0,\x0064\n")  # valid UTF-8, but a NUL: not a text file
    assert main(["config", *TINY, "--set", f"streams.trace={bad}"]) == 2
    want = f"streams.trace: {bad} is not UTF-8 text (a NUL byte at offset 14: binary?)"
    assert one_error_line(capsys) == f"scadles: error: {want}"


def test_binary_device_profile_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = random_bytes(tmp_path / "devices.csv")
    profile = ["--set", "clock.profile=csv", "--set", f"clock.csv={bad}"]
    args = ["run", *TINY, *profile, "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 2
    assert one_error_line(capsys).startswith(f"scadles: error: clock.csv: {bad} is not UTF-8")
    assert not (tmp_path / "run").exists()


def test_binary_config_json_of_a_resumed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    random_bytes(run / "config.json")
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"scadles: error: config: {run / 'config.json'} is not UTF-8")


def test_binary_summary_given_to_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    random_bytes(tmp_path / "summary.json")
    assert main(["report", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"scadles: error: report: {tmp_path / 'summary.json'} is not UTF-8")


def test_directory_and_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", str(tmp_path)]) == 2
    assert (
        one_error_line(capsys) == f"scadles: error: config: {tmp_path} is a directory, not a file"
    )
    assert main(["config", str(tmp_path / "gone.toml")]) == 2
    assert one_error_line(capsys).endswith(f"config: file not found: {tmp_path / 'gone.toml'}")


def test_a_jsonl_line_that_is_not_text_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "evals.jsonl"
    path.write_bytes(json.dumps({"step": 0}).encode() + b"\n\xff\xfe\n")
    with pytest.raises(UserError, match=r"evals\.jsonl line 2 is not UTF-8 text \(byte 0xff"):
        read_jsonl(path)


def test_text_with_a_byte_order_mark_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a spreadsheet's CSV starts with a UTF-8 byte-order mark: the trace still loads
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"\xef\xbb\xbftime_s,rate\n0,64\n10,32\n")
    assert main(["config", *TINY, "--set", f"streams.trace={trace}"]) == 0
    assert read_text(trace, "streams.trace").startswith("time_s,")
    assert decode("é".encode(), "x") == "é"


@pytest.mark.parametrize("content", [b"\xde\xad binary", b"[1, 2]"], ids=["binary", "a list"])
def test_reproduce_rows_that_are_not_a_rows_object(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "fig1" / "rows.json"
    rows.parent.mkdir()
    rows.write_bytes(content)
    assert main(["reproduce", "--out", str(tmp_path), "--only", "fig1", "--quiet"]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"scadles: error: reproduce: {rows}"), err


def test_binary_steps_of_a_resumed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(run), "--checkpoint-every", "1", "--quiet"]) == 0
    random_bytes(run / "steps.jsonl")
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"scadles: error: resume: {run / 'steps.jsonl'} is not UTF-8"), err


def test_a_lock_file_that_is_not_text_names_an_unknown_holder(tmp_path: Path) -> None:
    lock = random_bytes(tmp_path / ".lock")
    assert rundir._holder(lock) == "unknown"
    lock.write_text("4242\n")
    assert rundir._holder(lock) == "4242"
