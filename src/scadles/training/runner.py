"""Run one experiment to its budget: step, evaluate, stream records to disk, summarise.

The output folder is checked before anything is written (a previous run is never overwritten
without force) and locked while the run writes it (rundir.py). A run stopped by an exception or
Ctrl-C still leaves a folder `scadles report` reads: summary.json of the steps done, with
"interrupted": true.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from scadles.comm import Collective
from scadles.config.load import DEFAULTS_FILE, Config, config_to_dict, defaults_record
from scadles.data.datasets import Dataset
from scadles.data.injection import exposure
from scadles.data.partition import label_counts
from scadles.engine import Engine
from scadles.errors import UserError
from scadles.feeds import StreamsEnded
from scadles.live.base import LiveSource
from scadles.report.labels import plot_label_distribution
from scadles.report.records import (
    EvalReport,
    StepReport,
    SummaryAccumulator,
    write_json,
)
from scadles.training import build, checkpoint, memory
from scadles.training.build import SourceFactory
from scadles.training.divergence import DivergenceWatch
from scadles.training.rundir import check_out, clear_run_files, locked
from scadles.training.writers import Tee, open_writers, truncate

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


def _load_saved(
    out: Path, resolved: dict[str, Any], coll: Collective | None, per_rank: bool
) -> dict[str, Any]:
    """Read the checkpoint to resume from: the run's, or with live streams this rank's newest
    one whose step every rank has."""
    if not per_rank:
        return checkpoint.load(out / checkpoint.FILE, resolved)
    if coll is None:
        return checkpoint.load_ranked(out, 0, resolved, lambda step: step)

    def common(step: int) -> int:
        return int(coll.all_gather(torch.tensor([step], dtype=torch.int64)).min())

    return checkpoint.load_ranked(out, coll.rank, resolved, common)


class RunResult(dict[str, Any]):
    """The run's summary (the content of summary.json); with no output folder, the records too."""

    steps: list[StepReport]
    evals: list[EvalReport]


def _check_tensorboard() -> None:
    """UserError before any file is written when the tensorboard package cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        from scadles.report.tensorboard import MISSING

        raise UserError(MISSING) from None


def run(
    cfg: Config,
    out: Path | None,
    *,
    progress: Progress | None = None,
    data: Dataset | None = None,
    model: torch.nn.Module | None = None,
    source: LiveSource | SourceFactory | None = None,
    coll: Collective | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
    tensorboard: bool = False,
) -> RunResult:
    """Train under cfg, writing config.json, steps.jsonl, evals.jsonl, summary.json and the
    final model.pt into out (in real mode, rank 0 writes; every rank trains its devices).

    `model` (any module with forward(x)) replaces the configured model and is trained in place;
    `source` (a LiveSource, or a factory (devices, streams) -> LiveSource) feeds the devices
    from the user's own streams in real mode. With out=None nothing is written and the
    returned summary carries the step and eval records (`.steps`, `.evals`).
    A non-empty out is refused (UserError) unless resume or force: force first removes the
    previous run's files (rundir.RUN_FILES; nothing else). The writer holds out/.lock for the
    whole run, so a second process on the same folder is refused. An exception or Ctrl-C after
    the start writes summary.json with "interrupted": true before it propagates.
    With checkpoint_every, the run checkpoints atomically every that many steps (out/
    checkpoint.pt, or one file per rank on live streams); with resume, the run continues from
    it and ends with the files an uninterrupted run writes. With tensorboard, the step and eval
    records also go to out/tensorboard as scalars.
    """
    host0 = time.perf_counter()
    if out is None and (checkpoint_every or resume or force or tensorboard):
        raise UserError("checkpoints, --resume, --force and --tensorboard need an output folder")
    if resume and force:
        raise UserError("--resume and --force exclude each other: give one")
    if tensorboard:
        _check_tensorboard()
    lead = coll is None or coll.rank == 0
    claim = _claimed(out, resume, force) if lead and out is not None else contextlib.nullcontext()
    with claim:
        return _train(
            cfg,
            out,
            lead,
            host0,
            progress=progress,
            data=data,
            model=model,
            source=source,
            coll=coll,
            checkpoint_every=checkpoint_every,
            resume=resume,
            tensorboard=tensorboard,
        )


@contextlib.contextmanager
def _claimed(out: Path, resume: bool, force: bool) -> Iterator[None]:
    """Check out, create it, hold its lock (and with force clear the previous run's files)
    while the run writes; a folder this made and that stays empty goes again on failure."""
    check_out(out, resume=resume, force=force)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create it ({e.strerror})") from None
    try:
        with locked(out):
            check_out(out, resume=resume, force=force)  # again: a run may have ended meanwhile
            if force:
                clear_run_files(out)
            yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _train(
    cfg: Config,
    out: Path | None,
    lead: bool,
    host0: float,
    *,
    progress: Progress | None,
    data: Dataset | None,
    model: torch.nn.Module | None,
    source: LiveSource | SourceFactory | None,
    coll: Collective | None,
    checkpoint_every: int | None,
    resume: bool,
    tensorboard: bool,
) -> RunResult:
    """Train under cfg into a checked, locked out (see run)."""
    data = data if data is not None else build.dataset(cfg)
    resolved = config_to_dict(cfg)
    per_rank = source is not None or cfg.live.source != "sim"
    saved = _load_saved(out, resolved, coll, per_rank) if resume and out is not None else None
    state = saved["engine"] if saved is not None else None
    memory.check(cfg, data, coll, model)  # refuse a run that cannot fit, before allocating it
    eng = build.engine(
        cfg,
        data,
        coll,
        model=model,
        source=source,
        positions=state["feed"]["positions"] if state is not None and per_rank else None,
        defer_acks=bool(checkpoint_every),
        start_s=float(state["clock"]["elapsed"]) if state is not None and per_rank else 0.0,
    )
    if lead and saved is None and out is not None:  # after the checks the engine's build makes
        write_json(out / "config.json", resolved)
        write_json(out / DEFAULTS_FILE, defaults_record(cfg))  # sections from the defaults
        counts = label_counts(data.y_train, build.partitions(cfg, data), data.num_classes)
        _write_label_view(counts, out)  # (K, C) label skew
    t = cfg.train
    total, unit = _budget(cfg)
    acc = SummaryAccumulator(target_accuracy=cfg.eval.target_accuracy, metric=cfg.eval.metric)
    every = cfg.eval.every
    last_eval = n_evals = 0
    kept = RunResult()
    kept.steps, kept.evals = [], []
    watch = DivergenceWatch(t.diverge_steps, t.diverge_factor)
    diverged: str | None = None
    if saved is not None and out is not None:
        eng.load_state_dict(saved["engine"])
        acc.__dict__.update(copy.deepcopy(saved["summary"]))
        if "divergence" in saved:  # checkpoints written before the watch existed have none
            watch.load_state_dict(saved["divergence"])
        last_eval, n_evals = int(saved["last_eval"]), int(saved["evals_lines"])
        if lead:
            truncate(out / "steps.jsonl", eng.counters.step)
            truncate(out / "evals.jsonl", n_evals)
    with contextlib.ExitStack() as stack:
        steps, evals = open_writers(out, lead, saved is not None, (kept.steps, kept.evals))
        stack.callback(steps.close)
        stack.callback(evals.close)
        if tensorboard and lead and out is not None:
            from scadles.report.tensorboard import TensorBoardWriter

            board = stack.enter_context(TensorBoardWriter(out / "tensorboard"))
            steps, evals = Tee(steps, board), Tee(evals, board)

        def evaluate() -> None:
            nonlocal n_evals
            ev = eng.evaluate()
            evals.write(ev)
            acc.update_eval(ev)
            n_evals += 1

        try:
            if lead and saved is None:
                evaluate()
            while True:
                c = eng.counters
                if t.steps is not None and c.step >= t.steps:
                    break
                if t.max_time_s is not None and c.t >= t.max_time_s:
                    break
                skipped = eng.skipped_nonfinite
                try:
                    rep = eng.step()
                except StreamsEnded as e:
                    log.warning("run ends at step %d: %s", c.step, e)
                    break
                steps.write(rep)  # one flushed line per record: the file is whole at any time
                acc.update(rep)
                if watch.update(rep.step, rep.loss, eng.skipped_nonfinite > skipped):
                    diverged = watch.message(rep.step, eng.rule.lr_scaling, eng.rule.scale_max)
                    log.info("run stops at step %d: %s", rep.step, diverged)
                    break
                if rep.step % every == 0 and lead:
                    evaluate()
                    last_eval = rep.step
                if checkpoint_every and rep.step % checkpoint_every == 0 and out is not None:
                    meta = {"summary": vars(acc), "last_eval": last_eval, "evals_lines": n_evals}
                    meta["divergence"] = watch.state_dict()
                    _save(eng, out, coll, lead, meta | {"config": resolved})
                if progress is not None:
                    done = rep.step if unit == "steps" else rep.sim_time_s
                    progress(min(done, total), total, f"{cfg.policy.name} step {rep.step}")
            if eng.counters.step != last_eval and lead:
                evaluate()
        except BaseException:
            if lead and out is not None:
                _write_interrupted(cfg, eng, acc, host0, out)
            raise
    extra = eng.feed.close()
    summary = _summary(cfg, eng, acc, host0, interrupted=False, diverged=diverged, **extra)
    if lead and out is not None:
        write_json(out / "summary.json", summary)
        torch.save(eng.model.state_dict(), out / "model.pt")
    kept.update(summary)
    return kept


def _summary(
    cfg: Config,
    eng: Engine,
    acc: SummaryAccumulator,
    host0: float,
    **fields: Any,
) -> dict[str, Any]:
    """Return summary.json's dict: the accumulated records, the feed's books, the run's setup."""
    books = eng.feed.accounting()
    exposed = exposure(books.shared, books.own_trained)  # (K,) fraction of own samples that left
    elapsed = max(eng.counters.t, 1e-12)
    return acc.finish(
        policy=cfg.policy.name,
        mode=cfg.run.mode,
        host_seconds=time.perf_counter() - host0,
        buffer_policy=build.buffer_policy(cfg),
        devices=cfg.devices.count,
        samples_arrived=int(books.arrived.sum()),
        samples_dropped=int(books.dropped.sum()),
        samples_held=int(books.held.sum()),
        samples_trained=int(books.trained.sum()),
        steps_skipped_nonfinite=eng.skipped_nonfinite,
        exposure=float(exposed.mean()),
        exposure_per_device=exposed.tolist(),
        stream_rates_measured=(books.arrived.double() / elapsed).tolist(),
        threads=torch.get_num_threads(),
        clock_profile=cfg.clock.profile,
        comm_params=build.comm_size(cfg, eng.data, eng.model)[0],
        **fields,
    )


def _write_interrupted(
    cfg: Config, eng: Engine, acc: SummaryAccumulator, host0: float, out: Path
) -> None:
    """Write summary.json for the steps done before an exception (no collective, no broker
    acknowledgement: a resumed run continues from the last checkpoint as if none happened)."""
    try:
        write_json(
            out / "summary.json", _summary(cfg, eng, acc, host0, interrupted=True, diverged=None)
        )
    except Exception:  # the original exception matters more than this summary
        log.exception("could not write the summary of the interrupted run in %s", out)


def _save(
    eng: Engine, out: Path, coll: Collective | None, lead: bool, state: dict[str, Any]
) -> None:
    """Checkpoint: one file written by rank 0 when every rank's feed state is the same, else one
    per rank; then acknowledge to the brokers what the checkpoint holds as done."""
    if eng.feed.shared_state:
        if lead:
            checkpoint.save(out / checkpoint.FILE, state | {"engine": eng.state_dict()})
        return
    rank = coll.rank if coll is not None else 0
    checkpoint.save_ranked(out, rank, state | {"engine": eng.state_dict()})
    eng.feed.committed()
