"""The static HTML report: tables, images that exist, sub-report links, and a headless render."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from scadles.cli.main import main as cli_main
from scadles.cli.report import add_parser, main
from scadles.errors import UserError
from scadles.report.html import write_report
from scadles.report.records import comparison, write_json

TINY = [
    "--set", "data.name=synthetic",
    "--set", "data.n_train=600",
    "--set", "data.n_test=200",
    "--set", "model.name=mlp",
    "--set", "devices.count=2",
    "--set", "train.steps=6",
    "--set", "eval.every=2",
    "--set", "eval.target_accuracy=0.2",
]  # fmt: skip


class Page(HTMLParser):
    """Collect a page's table rows (cell texts), image sources, links and element attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.imgs: list[dict[str, str | None]] = []
        self.hrefs: list[str] = []
        self.body: dict[str, str | None] = {}
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        elif tag == "body":
            self.body = a

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


def check_local_refs(index: Path, page: Page) -> None:
    """Every <img> and link of the page points at an existing file next to it."""
    assert page.imgs, "no images"
    for img in page.imgs:
        assert (index.parent / str(img["src"])).is_file(), img
    for href in page.hrefs:
        assert (index.parent / href).is_file(), href


@pytest.fixture(scope="module")
def comp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny run, copied as two policies of a comparison (ddl 1.5x slower to target)."""
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    assert cli_main(["run", *TINY, "--out", str(out / "scadles"), "--quiet"]) == 0
    shutil.copytree(out / "scadles", out / "ddl")
    runs = {
        name: json.loads((out / name / "summary.json").read_text()) for name in ("scadles", "ddl")
    }
    bounds = runs["ddl"]["time_to_target_bounds_s"] or [1.0, 1.0]
    runs["ddl"] = {
        **runs["ddl"],
        "policy": "ddl",
        "time_to_target_s": 1.5 * (runs["ddl"]["time_to_target_s"] or 1.0),
        "time_to_target_bounds_s": [1.5 * t for t in bounds],
    }
    write_json(out / "ddl" / "summary.json", runs["ddl"])
    write_json(out / "comparison.json", comparison(runs))
    return out


def test_run_report_draws_missing_plots_and_tabulates_the_summary(
    tmp_path: Path, comp_dir: Path
) -> None:
    run = tmp_path / "run"
    drawn = ("accuracy_vs_time.png", "buffer.png", "batch_sizes.png", "index.html")
    shutil.copytree(comp_dir / "ddl", run, ignore=shutil.ignore_patterns(*drawn))
    index = write_report(run)
    assert index == run / "index.html"
    assert (run / "accuracy_vs_time.png").stat().st_size > 1000
    page = parse(index.read_text())
    summary = json.loads((run / "summary.json").read_text())
    table = page.tables[0]
    assert table[0] == ["key", "value"]
    assert [r[0] for r in table[1:]] == list(summary)
    cells = dict(r for r in table[1:] if len(r) == 2)
    assert cells["steps"] == "6"
    assert cells["final_accuracy"] == f"{100 * summary['final_accuracy']:.2f} %"  # fractions as %
    assert cells["bytes_sent"].endswith("B") and cells["sim_time_s"].endswith("s (simulated)")
    lo, hi = summary["time_to_target_bounds_s"]
    assert cells["time_to_target_bounds_s"] == f"[{lo:,.1f} s, {hi:,.1f} s] (simulated)"
    srcs = {img["src"] for img in page.imgs}
    assert srcs == {p.name for p in run.glob("*.png")} >= {"accuracy_vs_time.png", "buffer.png"}
    assert '"n_train": 600' in index.read_text()  # the resolved config, pretty printed
    check_local_refs(index, page)


def test_comparison_report_lists_policies_and_links_sub_reports(comp_dir: Path) -> None:
    index = write_report(comp_dir)
    assert (comp_dir / "accuracy_vs_time.png").stat().st_size > 1000  # drawn when missing
    page = parse(index.read_text())
    comp = json.loads((comp_dir / "comparison.json").read_text())
    policies = page.tables[1]
    head = dict(r for r in page.tables[0][1:] if len(r) == 2)
    assert head["target_accuracy"] == "20.00 %"
    lo, hi = comp["speedup_bounds"]
    hi_text = "∞" if hi is None else f"{hi:.2f}"  # ∞: ScaDLES may have crossed right at 0 s
    assert head["speedup [bracket]"] == f"{comp['speedup']:.2f}x [{lo:.2f}, {hi_text}]"
    assert policies[0][:3] == [
        "policy",
        "time to target (simulated s) [bracket]",
        "speedup [bracket]",
    ]
    assert policies[0][-2:] == ["clock profile", "parameters charged"]
    rows = {r[0]: r for r in policies[1:]}
    assert set(rows) == set(comp["runs"]) == {"scadles", "ddl"}
    base = comp["runs"]["ddl"]["time_to_target_s"]
    for name, s in comp["runs"].items():
        ttt = s["time_to_target_s"]
        t_lo, t_hi = s["time_to_target_bounds_s"]
        assert rows[name][1] == f"{ttt:,.1f} [{t_lo:,.1f}, {t_hi:,.1f}]"
        assert rows[name][2].startswith(f"{base / ttt:.2f}x [")
        assert rows[name][4] == f"{100 * s['final_accuracy']:.2f} %"
        assert rows[name][-2] == str(s.get("clock_profile", "—"))  # a dash in older summaries
    text = index.read_text()
    assert '<div class="figures">' in text and "interpolated linearly" in text
    for img in page.imgs:  # every figure says what it shows
        assert f"<figcaption><code>{img['src']}</code>: " in text
    assert sorted(page.hrefs) == ["ddl/index.html", "scadles/index.html"]
    assert "../index.html" in (comp_dir / "ddl" / "index.html").read_text()
    check_local_refs(index, page)


def write_reproduction(root: Path, comp_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"experiment": "exp_a", "quantity": "speedup", "paper": 2.0, "ours": 3.0, "unit": "x",
         "note": "<b>fast</b> & loose"},
        {"experiment": "exp_a", "quantity": "accuracy", "paper": None, "ours": 0.9, "unit": "",
         "note": ""},
        {"experiment": "missing", "quantity": "bytes", "paper": 0.0, "ours": 5.0, "unit": "GB",
         "note": "n/a"},
    ]  # fmt: skip
    shutil.copytree(comp_dir, root / "experiments" / "exp_a")
    (root / "reproduction.json").write_text(json.dumps(rows))
    return rows


def test_reproduction_report_tabulates_paper_vs_ours(tmp_path: Path, comp_dir: Path) -> None:
    rows = write_reproduction(tmp_path, comp_dir)
    index = write_report(tmp_path)
    page = parse(index.read_text())
    table = page.tables[0]
    assert table[0] == ["experiment", "quantity", "paper", "ours", "ratio", "note"]
    assert len(table) == 1 + len(rows)
    assert table[1] == ["exp_a", "speedup x", "2", "3", "1.5", "<b>fast</b> & loose"]
    assert table[2][4] == "—" and table[3][4] == "—"  # no paper value; paper value zero
    assert "&lt;b&gt;fast&lt;/b&gt; &amp; loose" in index.read_text()  # escaped, not markup
    assert "experiments/exp_a/index.html" in page.hrefs
    assert (tmp_path / "experiments" / "exp_a" / "scadles" / "index.html").is_file()
    for href in page.hrefs:
        assert (tmp_path / href).is_file()


def test_sweep_report_links_each_point(tmp_path: Path, comp_dir: Path) -> None:
    shutil.copytree(comp_dir / "ddl", tmp_path / "ratio=0.1")
    summary = json.loads((comp_dir / "ddl" / "summary.json").read_text())
    sweep = {
        "grid": ["compress.ratio"],
        "rows": [{"params": {"compress.ratio": 0.1}, "dir": "/elsewhere/ratio=0.1",
                  "summary": summary}],
    }  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    page = parse(write_report(tmp_path).read_text())
    assert page.tables[0][0][:3] == ["run", "compress.ratio", "final top-1"]
    top1 = f"{100 * summary['final_accuracy']:.2f} %"
    assert page.tables[0][1][:3] == ["compress.ratio=0.1", "0.1", top1]
    assert page.hrefs == ["ratio=0.1/index.html"]


def test_other_directories_are_rejected(tmp_path: Path) -> None:
    msg = f"report: {tmp_path}: not a run, comparison, sweep or reproduction directory"
    with pytest.raises(UserError, match=re.escape(msg)):
        write_report(tmp_path)
    (tmp_path / "comparison.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"comparison\.json"):
        write_report(tmp_path)


def test_cli_entry_prints_the_written_path(
    comp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(comp_dir / "scadles")])
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(comp_dir / "scadles" / "index.html")


def dump_dom(index: Path) -> Page:
    """Render a page in headless Chromium and parse the DOM after its load handlers ran."""
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    cmd += ["--dump-dom", index.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return parse(res.stdout)


@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"),
    reason="chromium is not on PATH (scripts/install_chromium.sh installs it; required under CI)",
)
def test_pages_render_in_headless_chromium(tmp_path: Path, comp_dir: Path) -> None:
    rows = write_reproduction(tmp_path, comp_dir)
    write_report(tmp_path)
    top = dump_dom(tmp_path / "index.html")
    assert top.body.get("data-ready") == "1"  # the load handler ran
    assert len(top.tables[0]) == 1 + len(rows)
    exp = tmp_path / "experiments" / "exp_a"
    (exp / "buffer.png").unlink()  # the check can fail: a missing image is marked unloaded
    page = dump_dom(exp / "index.html")
    assert [r[0] for r in page.tables[1][1:]] == ["scadles", "ddl"]
    loaded = {str(i["src"]): i.get("data-loaded") for i in page.imgs}
    assert loaded == {p.name: "1" for p in exp.glob("*.png")} | {"buffer.png": "0"}
    assert len(loaded) >= 4
