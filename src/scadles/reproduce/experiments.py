"""The paper's experiments on data that runs here: each returns reproduction rows.

Every experiment reads its setting from configs/<track>/<name>.toml ([paper] sections 4-5,
adapted to MNIST-1D or Fashion-MNIST) and sets only what its grid varies: the rate set, the
buffer policy, the compression ratio and threshold, the injection. Tables IV-VI and Figs. 6-7
run once per paper model (settings.py: ResNet152 as the TOMLs hold it, VGG19's hyper-parameters
on top). `--quick` keeps fewer grid points and the ResNet152 setting only.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scadles.config.load import Config
from scadles.report.records import iter_jsonl
from scadles.reproduce import paper
from scadles.reproduce.analytic import fig1, table2
from scadles.reproduce.runs import Row, Runs, at_target, final, metric, row, time_to
from scadles.reproduce.settings import RESNET152, TRACK_SETTINGS, VGG19, Setting

GIB_PER_SAMPLE = paper.SAMPLE_BYTES / paper.GIB  # the paper's buffers in GB at 3 KB per sample
RESNET_SIZE = "resnet152"  # 60,192,808 parameters in 467 tensors, as clock.emulate_params
INJECTIONS = (0.05, 0.1, 0.25, 0.5)
RESNET_COMM = "communication at ResNet152's 60.2M parameters"
RES = RESNET152.model


def _quick(runs: Runs, steps: int) -> dict[str, Any]:
    """Return the step budget override under --quick (none otherwise)."""
    return {"train.steps": steps} if runs.opts.quick else {}


def _rate_sets(runs: Runs, quick_sets: tuple[str, ...]) -> dict[str, str]:
    """Return paper rate set -> preset: all four, or quick_sets under --quick."""
    sets = paper.RATE_SETS
    return {k: v for k, v in sets.items() if not runs.opts.quick or k in quick_sets}


def _settings(runs: Runs) -> tuple[Setting, ...]:
    """Return the paper models to stand in for: the track's (TRACK_SETTINGS); --quick: ResNet152."""
    return (RESNET152,) if runs.opts.quick else TRACK_SETTINGS[runs.opts.track]


def _config(runs: Runs, name: str, st: Setting, sets: dict[str, Any]) -> Config:
    """Return configs/<track>/<name>.toml with the setting's keys, then the experiment's."""
    return runs.config(name, dict(st.sets) | sets)


def _row(
    st: Setting, exp: str, q: str, v: float | None, unit: str, note: str = "", **kw: Any
) -> Row:
    """Return a row of the setting: quantity prefixed like the paper's values of its model."""
    return row(exp, f"{st.prefix}{q}", v, unit, note, setting=st.model, **kw)


def _speedup_rows(st: Setting, exp: str, tag: str, comp: dict[str, Any], k: int) -> list[Row]:
    """Return speedup, final accuracy delta, buffer reduction (GB at 3 KB) and times to target."""
    s, d = comp["runs"]["scadles"], comp["runs"]["ddl"]
    m = metric(s)
    b_s, _ = at_target(s, "buffer_total")
    b_d, _ = at_target(d, "buffer_total")
    target = f"target {comp['target_accuracy']:.0%}; {s['steps']} / {d['steps']} steps"
    held = f"{k} devices, 3 KB/sample, DDL - ScaDLES held at target"
    f_s, f_d = final(s), final(d)
    delta = f_s - f_d if f_s is not None and f_d is not None else None
    comm = f"; {st.comm}" if st.comm else ""
    return [
        _row(st, exp, f"{tag}speedup", comp["speedup"], "x", target + comm, metric=m),
        _row(st, exp, f"{tag}accuracy delta", delta, "pp", "final", metric=m),
        _row(st, exp, f"{tag}buffer reduction", (b_d - b_s) * GIB_PER_SAMPLE, "GB", held, metric=m),
        _row(st, exp, f"{tag}time to target ScaDLES", s["time_to_target_s"], "s", metric=m),
        _row(st, exp, f"{tag}time to target DDL", d["time_to_target_s"], "s", metric=m),
    ]


def _at_targets(tag: str, comp: dict[str, Any]) -> list[Row]:
    """Return the speedup at other targets, from the same runs' evaluations."""
    out = []
    m = metric(comp["runs"]["scadles"])
    for target in (0.8, 0.9, 0.95):
        t_s, t_d = (time_to(comp["runs"][p], target) for p in ("scadles", "ddl"))
        sp = t_d / t_s if t_s and t_d is not None else None
        q = f"{tag}speedup at {target:.0%}"
        out.append(row("headline", q, sp, "x", "same runs", metric=m, setting=RES))
    return out


def headline(runs: Runs) -> list[Row]:
    """Table VI's ResNet152 / S'1 row: full ScaDLES vs DDL, 16 devices, normal-S1, IID.

    Two more comparisons isolate what differs from the paper: ScaDLES without compression, and
    communication charged at ResNet152's size instead of this model's.
    """
    st = RESNET152
    own = runs.compare("headline", "own-size", runs.config("headline"))
    out = _speedup_rows(st, "headline", "", own, 16) + _at_targets("", own)
    emulate: dict[str, Any] = {"clock.emulate_params": RESNET_SIZE}
    variants: dict[str, tuple[str, dict[str, Any], str]] = {
        "without compression: ": ("dense", {"compress.name": "none"}, "ScaDLES dense"),
        "ResNet152-size comm: ": ("resnet-size", emulate, RESNET_COMM),
    }
    for tag, (label, sets, why) in variants.items():
        comp = runs.compare("headline", label, runs.config("headline", sets))
        for r in _speedup_rows(st, "headline", tag, comp, 16)[:3]:
            same = paper.paper_value("headline", r["quantity"].removeprefix(tag))
            out.append(r | {"paper": same, "note": f"{why}; {r['note']}"})
    return out


def table4(runs: Runs) -> list[Row]:
    """Table IV: ScaDLES' buffer per device at the target, persistence vs truncation."""
    out = []
    for st in _settings(runs):
        for rs, preset in _rate_sets(runs, ("S1", "S'1")).items():
            held = {}
            for policy in ("persistence", "truncation"):
                sets = {"streams.rates": preset, "buffer.policy": policy}
                cfg = _config(runs, "table4", st, sets)
                s = runs.run("table4", f"{st.folder}{preset}/{policy}", cfg)
                total, reached = at_target(s, "buffer_total")
                held[policy] = total / s["devices"]
                note = "mean per device at target" if reached else "target not reached: at the end"
                q, unit = f"{rs} {policy} buffer", "samples/device"
                out.append(_row(st, "table4", q, held[policy], unit, note, metric=metric(s)))
            ratio = held["persistence"] / held["truncation"] if held["truncation"] else None
            note = "persistence / truncation"
            out.append(
                _row(st, "table4", f"{rs} buffer reduction", ratio, "x", note, metric=metric(s))
            )
    return out


def table5(runs: Runs) -> list[Row]:
    """Table V: CNC, final accuracy and floats to the target per (CR, delta), and dense."""
    grid = [(r, d) for r in (0.1, 0.01) for d in (0.1, 0.2, 0.3, 0.4)]
    if runs.opts.quick:
        grid = [(0.1, 0.3)]
    budget = _quick(runs, 400)
    out = []
    for st in _settings(runs):
        floats = f"per device, at {st.model}'s size"
        sets = {"compress.name": "none"} | budget
        dense = runs.run("table5", f"{st.folder}dense", _config(runs, "table5", st, sets))
        m = metric(dense)
        out += [
            _row(
                st,
                "table5",
                "dense floats to target",
                dense["floats_to_target"],
                "floats",
                floats,
                metric=m,
            ),
            _row(st, "table5", "dense accuracy", final(dense), "%", "final", metric=m),
        ]
        for cr, delta in grid:
            sets = {"compress.ratio": cr, "compress.delta": delta} | budget
            s = runs.run(
                "table5", f"{st.folder}ratio={cr},delta={delta}", _config(runs, "table5", st, sets)
            )
            tag = f"CR {cr} delta {delta}"
            out += [
                _row(st, "table5", f"{tag} CNC", s["compressed_fraction"], "fraction"),
                _row(st, "table5", f"{tag} accuracy", final(s), "%", "final", metric=m),
                _row(
                    st,
                    "table5",
                    f"{tag} floats to target",
                    s["floats_to_target"],
                    "floats",
                    floats,
                    metric=m,
                ),
            ]
    return out


def table6(runs: Runs) -> list[Row]:
    """Table VI: full ScaDLES vs DDL at the four rate sets."""
    out = []
    for st in _settings(runs):
        for rs, preset in _rate_sets(runs, ("S'1",)).items():
            cfg = _config(runs, "table6", st, {"streams.rates": preset})
            comp = runs.compare("table6", f"{st.folder}{preset}", cfg)
            out += _speedup_rows(st, "table6", f"{rs} ", comp, 16)[:3]
    return out


def _fig6_runs(runs: Runs) -> dict[tuple[Setting, str], dict[str, Any]]:
    """Return (setting, rate set) -> comparison of weighted aggregation (dense) vs DDL."""
    out = {}
    for st in _settings(runs):
        for rs, p in _rate_sets(runs, ("S'1",)).items():
            cfg = _config(runs, "fig6", st, {"streams.rates": p} | _quick(runs, 300))
            out[st, rs] = runs.compare("fig6", f"{st.folder}{p}", cfg)
    return out


def fig6(runs: Runs) -> list[Row]:
    """Fig. 6: weighted aggregation only (dense, persistence for both) vs DDL: speedup."""
    out = []
    for (st, rs), comp in _fig6_runs(runs).items():
        note = f"{st.comm or RESNET_COMM}; persistence for both"
        s, d = comp["runs"]["scadles"], comp["runs"]["ddl"]
        f_s, f_d = final(s), final(d)
        delta = f_s - f_d if f_s is not None and f_d is not None else None
        out.append(_row(st, "fig6", f"{rs} speedup", comp["speedup"], "x", note, metric=metric(s)))
        out.append(_row(st, "fig6", f"{rs} accuracy delta", delta, "pp", "final", metric=metric(s)))
    return out


def fig7(runs: Runs) -> list[Row]:
    """Fig. 7: persistent buffer at the end of the runs, DDL / ScaDLES."""
    out = []
    for (st, rs), comp in _fig6_runs(runs).items():
        s, d = comp["runs"]["scadles"], comp["runs"]["ddl"]
        ratio = d["buffer_final_samples"] / max(s["buffer_final_samples"], 1)
        note = f"after {s['steps']} steps each"
        out.append(_row(st, "fig7", f"{rs} buffer ratio", ratio, "x", note))
    return out


def _inject(alpha: float) -> dict[str, Any]:
    return {"inject.name": "peers", "inject.alpha": alpha, "inject.beta": alpha}


def fig8(runs: Runs) -> list[Row]:
    """Fig. 8: non-IID accuracy with (alpha, beta) injection, DDL without, IID reference."""
    families: dict[str, dict[str, Any]] = {"": {}}
    if not runs.opts.quick:  # the VGG19 / CIFAR-100 setting: 25 devices, 4 label shards each
        k25 = {"devices.count": 25, "devices.partition": "shards", "devices.shards_per_device": 4}
        families["25 devices "] = k25
    out = []
    vgg = "VGG19's partition (25 devices, 4 label shards each), ResNet152's hyper-parameters"
    for fam, base in families.items():
        where, model, note = ("k25/", VGG19.model, vgg) if fam else ("", RES, "final")
        points: dict[str, dict[str, Any]] = {"none": {}, "(0.5, 0.5)": _inject(0.5)}
        if not runs.opts.quick and not fam:
            points |= {f"({a}, {a})": _inject(a) for a in INJECTIONS}
        points |= {"DDL": {"policy.name": "ddl"}, "IID": {"devices.partition": "iid"}}
        for name, sets in points.items():
            cfg = runs.config("fig8", base | sets | _quick(runs, 300))
            s = runs.run("fig8", f"{where}{name}", cfg)
            q = f"{fam}{name} accuracy"
            out.append(row("fig8", q, final(s), "%", note, metric=metric(s), setting=model))
    return out


def fig9(runs: Runs) -> list[Row]:
    """Fig. 9: data each device receives by injection per iteration (KB at 3 KB per sample)."""
    out = []
    for rs, preset in _rate_sets(runs, tuple(paper.RATE_SETS)).items():
        for a in INJECTIONS:
            sets = {"streams.rates": preset, "data.sample_bytes": paper.SAMPLE_BYTES}
            sets |= {"train.steps": 25} | _inject(a)
            s = runs.run("fig9", f"{preset}/({a}, {a})", runs.config("fig8", sets))
            k = s["devices"]
            steps = iter_jsonl(Path(s["dir"]) / "steps.jsonl")
            kb = statistics.median(r["injected"] / k * paper.SAMPLE_BYTES / 1024 for r in steps)
            note = f"received per device, median over steps, {k} devices"
            q = f"{rs} ({a}, {a}) transfer per iteration"
            out.append(row("fig9", q, kb, "KB", note, setting=RES))
    return out


EXPERIMENTS: dict[str, Callable[[Runs], list[Row]]] = {
    "headline": headline,
    "table2": table2,
    "fig1": fig1,
    "table4": table4,
    "table6": table6,
    "fig6": fig6,
    "fig7": fig7,
    "table5": table5,
    "fig8": fig8,
    "fig9": fig9,
}
