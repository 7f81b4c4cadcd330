"""Run one experiment to its budget: step, evaluate, stream records to disk, summarise."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from scadles.comm import Collective
from scadles.config.load import Config, config_to_dict
from scadles.data.datasets import Dataset
from scadles.data.injection import exposure
from scadles.data.partition import label_counts
from scadles.engine import Engine
from scadles.live.engine import LiveEngine, StreamsEnded
from scadles.report.labels import plot_label_distribution
from scadles.report.records import JsonlWriter, SummaryAccumulator, write_json
from scadles.training import build, checkpoint

log = logging.getLogger(__name__)

# progress(done, total, text): done/total in steps or simulated seconds
Progress = Callable[[float, float, str], None]


def _budget(cfg: Config) -> tuple[float, str]:
    """Return the progress total and its unit."""
    if cfg.train.steps is not None:
        return float(cfg.train.steps), "steps"
    assert cfg.train.max_time_s is not None
    return float(cfg.train.max_time_s), "sim s"


def _write_label_view(counts: torch.Tensor, out: Path) -> None:
    """Write the per-device label counts (K x C) as CSV and as a stacked-bar plot."""
    header = ",".join(["device", *(f"class_{c}" for c in range(counts.shape[1]))])
    rows = [",".join(map(str, [i, *r])) for i, r in enumerate(counts.tolist())]
    (out / "label_counts.csv").write_text("\n".join([header, *rows]) + "\n")
    plot_label_distribution(counts, out / "label_distribution.png")


class _Discard:
    """A writer that keeps nothing (ranks other than 0 in real mode)."""

    def write(self, obj: object) -> None:
        """Drop obj."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> _Discard:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Tee:
    """Write each record to two writers."""

    def __init__(self, first: Writer, second: Writer) -> None:
        self.first, self.second = first, second

    def write(self, obj: Any) -> None:
        """Write obj to both."""
        self.first.write(obj)
        self.second.write(obj)

    def close(self) -> None:
        """Close both."""
        self.first.close()
        self.second.close()


class Writer(Protocol):
    """Anything records can be written to."""

    def write(self, obj: Any, /) -> None:
        """Write one record."""

    def close(self) -> None:
        """Flush and close."""


def _writer(path: Path, keep: bool, append: bool) -> JsonlWriter | _Discard:
    return JsonlWriter(path, append=append) if keep else _Discard()


def _truncate(path: Path, lines: int) -> None:
    """Keep the first `lines` lines of a JSONL file (records written after a checkpoint)."""
    kept = path.read_text().splitlines(keepends=True)[:lines] if path.is_file() else []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _load_saved(
    out: Path, resolved: dict[str, Any], coll: Collective | None, live: bool
) -> dict[str, Any]:
    """Read the checkpoint to resume from: the run's, or in real mode on live streams this
    rank's newest one whose step every rank has."""
    if not live:
        return checkpoint.load(out / checkpoint.FILE, resolved)
    if coll is None:
        return checkpoint.load_ranked(out, 0, resolved, lambda step: step)

    def common(step: int) -> int:
        return int(coll.all_gather(torch.tensor([step], dtype=torch.int64)).min())

    return checkpoint.load_ranked(out, coll.rank, resolved, common)


def run(
    cfg: Config,
    out: Path,
    *,
    progress: Progress | None = None,
    data: Dataset | None = None,
    coll: Collective | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train under cfg, writing config.json, steps.jsonl, evals.jsonl, summary.json and the
    final model.pt into out (in real mode, rank 0 writes; every rank trains its devices).

    With checkpoint_every, out/checkpoint.pt is rewritten atomically every that many steps;
    with resume, the run continues from it and ends with the files an uninterrupted run writes.
    With tensorboard, the step and eval records also go to out/tensorboard as scalars.
    """
    host0 = time.perf_counter()
    lead = coll is None or coll.rank == 0
    data = data if data is not None else build.dataset(cfg)
    resolved = config_to_dict(cfg)
    live = cfg.live.source != "sim"
    saved = _load_saved(out, resolved, coll, live) if resume else None
    if lead and saved is None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", resolved)
        counts = label_counts(data.y_train, build.partitions(cfg, data), data.num_classes)
        _write_label_view(counts, out)  # (K, C) label skew
    eng: Engine | LiveEngine
    if live:
        pos = saved["engine"]["positions"] if saved is not None else None
        start = float(saved["engine"]["elapsed"]) if saved is not None else 0.0
        eng = build.live_engine(
            cfg, data, coll, positions=pos, defer_acks=bool(checkpoint_every), start_s=start
        )
    else:
        eng = build.engine(cfg, data, coll)
    t = cfg.train
    total, unit = _budget(cfg)
    acc = SummaryAccumulator(target_accuracy=cfg.eval.target_accuracy, metric=cfg.eval.metric)
    every = cfg.eval.every
    last_eval = n_evals = 0
    if saved is not None:
        if isinstance(eng, LiveEngine):
            eng.load_state_dict(saved["engine"])
        else:
            checkpoint.restore_engine(eng, saved["engine"])
        acc.__dict__.update(copy.deepcopy(saved["summary"]))
        last_eval, n_evals = int(saved["last_eval"]), int(saved["evals_lines"])
        if lead:
            _truncate(out / "steps.jsonl", eng.counters.step)
            _truncate(out / "evals.jsonl", n_evals)
    with contextlib.ExitStack() as stack:
        steps: Writer = _writer(out / "steps.jsonl", lead, saved is not None)
        evals: Writer = _writer(out / "evals.jsonl", lead, saved is not None)
        stack.callback(steps.close)
        stack.callback(evals.close)
        if tensorboard and lead:
            from scadles.report.tensorboard import TensorBoardWriter

            board = stack.enter_context(TensorBoardWriter(out / "tensorboard"))
            steps, evals = _Tee(steps, board), _Tee(evals, board)

        def evaluate() -> None:
            nonlocal n_evals
            ev = eng.evaluate()
            evals.write(ev)
            acc.update_eval(ev)
            n_evals += 1

        if lead and saved is None:
            evaluate()
        while True:
            c = eng.counters
            if t.steps is not None and c.step >= t.steps:
                break
            if t.max_time_s is not None and c.t >= t.max_time_s:
                break
            try:
                rep = eng.step()
            except StreamsEnded as e:
                log.warning("run ends at step %d: %s", c.step, e)
                break
            steps.write(rep)
            acc.update(rep)
            if rep.step % every == 0 and lead:
                evaluate()
                last_eval = rep.step
            if checkpoint_every and rep.step % checkpoint_every == 0 and (lead or live):
                state: dict[str, Any] = {"summary": vars(acc), "last_eval": last_eval}
                state |= {"evals_lines": n_evals, "config": resolved}
                if isinstance(eng, LiveEngine):
                    rank = coll.rank if coll is not None else 0
                    checkpoint.save_ranked(out, rank, state | {"engine": eng.state_dict()})
                    eng.flush_acks()  # what the checkpoint holds as trained is acknowledged now
                else:
                    state["engine"] = checkpoint.engine_state(eng)
                    checkpoint.save(out / checkpoint.FILE, state)
            if progress is not None:
                done = rep.step if unit == "steps" else rep.sim_time_s
                progress(min(done, total), total, f"{cfg.policy.name} step {rep.step}")
        if eng.counters.step != last_eval and lead:
            evaluate()
    extra = {}
    if isinstance(eng, LiveEngine):
        extra = eng.summary_extra()
        eng.close()
    buf = eng.buffer
    exposed = exposure(eng.shared, eng.own_trained)  # (K,) fraction of own samples that left
    summary = acc.finish(
        policy=cfg.policy.name,
        mode=cfg.run.mode,
        host_seconds=time.perf_counter() - host0,
        buffer_policy=build.buffer_policy(cfg),
        devices=cfg.devices.count,
        samples_arrived=int(buf.hi.sum()),
        samples_dropped=int(buf.dropped.sum()),
        samples_held=int(buf.held.sum()),
        samples_trained=int(buf.trained.sum()),
        steps_skipped_nonfinite=eng.skipped_nonfinite,
        exposure=float(exposed.mean()),
        exposure_per_device=exposed.tolist(),
        **extra,
    )
    if lead:
        write_json(out / "summary.json", summary)
        torch.save(eng.model.state_dict(), out / "model.pt")
    return summary
