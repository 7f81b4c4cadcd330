"""Rate presets: the authors' lists as transcribed, their extension to K, the 8/s floor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scadles.config.load import dump_toml, load_config
from scadles.data.rates import RATE_FLOOR, RATE_PRESETS, preset_rates
from scadles.errors import UserError

# Transcribed from the authors' execution_scripts/*.sh (`streamfreqs=(...)`), in their order.
AUTHORS = {
    # adapcomp_injection_resnet152.sh, "# Uniform dist S1" (commented out there)
    "authors-uniform-S1": [50, 38, 12, 36, 34, 13, 82, 40],
    # adapcomp_injection_resnet152.sh, "# Normal dist S1"
    "authors-normal-S1": [92, 38, 62, 42, 48, 88, 90, 22, 44, 28],
    # "# Uniform dist S2" there; adapcomp/staticcompression/datainjection_resnet152.sh
    "authors-normal-S2": [270, 218, 300, 246, 232, 284, 284, 236, 274, 228],
    # adapcomp_vgg19.sh, adapcomp_injection_vgg19.sh, staticcompression_vgg19.sh,
    # datainjection_vgg19.sh (8 devices there: the first 8)
    "authors-vgg19": [92, 22, 62, 42, 48, 36, 18, 38, 84, 60, 108, 40, 58,
                      16, 44, 78, 92, 28, 30, 52, 84, 20, 16, 38, 66],
}  # fmt: skip
KS = (8, 10, 16, 25, 100)
# Presets whose source reaches below 8/s at the given K: uniform-S1's U[38 - 24 sqrt 3, ...] =
# [-3.6, 79.6] at every K >= 4; normal-S1's lowest quantile 64 + 24 ndtri(0.5 / K) is 8.35 at
# K = 49 and 2.2 at K = 100. No authors' list goes below 12/s.
SET = ("devices.count=16", "train.steps=1")
FLOORED = {("uniform-S1", k) for k in KS} | {("normal-S1", 100)}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_authors_list_is_transcribed_exactly(name: str) -> None:
    n = len(AUTHORS[name])
    got = preset_rates(name, n)
    assert got.dtype == torch.float64
    assert got.tolist() == [float(v) for v in AUTHORS[name]]


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_extension_rule_device_i_gets_list_i_mod_n(name: str) -> None:
    src = AUTHORS[name]
    n = len(src)
    assert preset_rates(name, n - 3).tolist() == src[: n - 3]  # K < n: the first K
    assert preset_rates(name, 2 * n).tolist() == src + src  # K = 2n: the list twice
    k = 2 * n + 3  # K > n, not a multiple: the first K mod n once more
    assert preset_rates(name, k).tolist() == [float(src[i % n]) for i in range(k)]
    assert preset_rates(name, 1).tolist() == [src[0]]


def test_extension_mean_at_k16_is_the_documented_one() -> None:
    assert float(preset_rates("authors-normal-S1", 16).mean()) == pytest.approx(57.75)
    assert float(preset_rates("authors-uniform-S1", 16).mean()) == pytest.approx(305 / 8)
    # K a multiple of n keeps the list's mean exactly
    assert float(preset_rates("authors-normal-S1", 20).mean()) == pytest.approx(55.4)


def test_preset_statistics_match_their_labels() -> None:
    s1, s2 = RATE_PRESETS.get("authors-uniform-S1"), RATE_PRESETS.get("authors-normal-S2")
    assert s1.mean == pytest.approx(38.125) and s1.std == pytest.approx(22.05, abs=0.01)
    # labelled "Uniform S2" by the authors, but S'2's statistics (normal 256 / 28)
    assert s2.mean == pytest.approx(257.2) and s2.std == pytest.approx(28.51, abs=0.01)
    assert s2.dist is None and RATE_PRESETS.get("normal-S2").dist == "normal"


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", list(RATE_PRESETS))
def test_minimum_rate_is_on_the_floor_only_where_the_source_goes_below(name: str, k: int) -> None:
    rates = preset_rates(name, k)
    assert rates.shape == (k,)
    assert float(rates.min()) >= RATE_FLOOR
    assert (float(rates.min()) == RATE_FLOOR) == ((name, k) in FLOORED)


def test_quantile_presets_keep_their_names_and_values() -> None:
    # uniform-S1 is still Table I's quantiles: round(38 + 24 sqrt 3 (2u - 1)) at u = (i + 1/2) / 16,
    # clamped to [8, 1024]; its two lowest quantiles (-0.97 and 4.22) sit on the floor
    want = [
        min(max(round(38 + 24 * math.sqrt(3) * ((2 * i + 1) / 16 - 1)), 8), 1024) for i in range(16)
    ]
    assert sorted(preset_rates("uniform-S1", 16).tolist()) == want
    assert want[:3] == [8, 8, 9]
    assert {"uniform-S1", "uniform-S2", "normal-S1", "normal-S2"} <= set(RATE_PRESETS)


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_preset_names_load_from_toml_and_set(name: str, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'[train]\nsteps = 1\n\n[devices]\ncount = 16\n\n[streams]\nrates = "{name}"\n')
    from_file = load_config(toml)
    from_set = load_config(None, [f"streams.rates={name}", *SET])
    assert from_file.streams.rates.preset == from_set.streams.rates.preset == name
    assert (
        load_config(None, [*SET, f"streams.rates={name}"]).streams.rates == from_set.streams.rates
    )
    assert dump_toml(from_file).count(f'rates = "{name}"') == 1  # round trips as a TOML string


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as err:
        RATE_PRESETS.get("authors-S1")
    msg = str(err.value)
    assert msg.startswith("streams.rates: unknown preset 'authors-S1'")
    assert all(n in msg for n in AUTHORS)
