"""The paper's analytic results as reproduction rows: Table II (Eq. 3) and Fig. 1 (b/S - 1)."""

from __future__ import annotations

from scadles.data.rates import preset_rates
from scadles.reproduce import paper
from scadles.reproduce.runs import Row, Runs, row


def table2(runs: Runs) -> list[Row]:
    """Table II: data accumulated (GB) by Eq. 3 at 3 KB per sample."""
    out = []
    for (model, s, t), printed in paper.TABLE2_PRINTED.items():
        ours = paper.table2_gb(model, s, t)
        same = round(ours, len(repr(printed).split(".")[1])) == printed
        note = "Eq. 3, 3072 B/sample, GiB" + ("" if same else "; the paper's arithmetic differs")
        q = f"{model} S={s:g} T={t:g}"
        out.append(row("table2", q, round(ours, 4), "GB", note, setting=model))
    return out


def fig1(runs: Runs) -> list[Row]:
    """Fig. 1: seconds to gather a batch beyond the first, b/S - 1, max/min over devices."""
    out = []
    for rs, b, side in paper.FIG1_READ:
        rates = paper.AUTHORS_RATES.get(rs)
        note = "authors' rate list"
        if rates is None:
            rates = tuple(preset_rates(paper.RATE_SETS[rs], 16).tolist())
            note = "our 16-device preset (the paper lists no rates)"
        ours = paper.fig1_latency(rates, b, side)
        out.append(row("fig1", f"{rs} b={b} {side} latency", round(ours, 3), "s", note))
    return out
