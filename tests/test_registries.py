"""One contract suite over every entry of every name registry, parametrised from the registries.

A new entry (or a new registry imported by the config checks) is covered without editing this
file: the registries are found in the loaded scadles modules, their entries enumerated at
collection time, and the config keys they back read from each registry's own `key`.
"""

from __future__ import annotations

import gzip
import math
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scadles.clock import PROFILES, make_profiles
from scadles.compress.registry import COMPRESSORS, make_compressor
from scadles.compress.switches import SWITCHES, SwitchArgs
from scadles.compress.timeaware import MeasuredCosts
from scadles.config.load import SCHEMA, load_config  # imports every registry the config reads
from scadles.data.buffer import BUFFER_POLICIES
from scadles.data.datasets import DATASETS, load_dataset
from scadles.data.injectors import INJECTIONS
from scadles.data.partition import PARTITIONS, partition
from scadles.data.rates import DISTRIBUTIONS, RATE_PRESETS, distribution_rates, preset_rates
from scadles.errors import UserError
from scadles.live.source import SOURCES
from scadles.nn.models import MODELS, build_model
from scadles.policies import POLICIES
from scadles.registry import Registry


def _found() -> dict[str, Registry[Any]]:
    """Return every Registry object of the loaded scadles modules, by its dotted name."""
    out: dict[str, Registry[Any]] = {}
    seen: set[int] = set()
    for mod in sorted(list(sys.modules.values()), key=lambda m: getattr(m, "__name__", "")):
        name = getattr(mod, "__name__", "")
        if not name.startswith("scadles.") or name == "scadles.registry":
            continue
        for attr, value in vars(mod).items():
            if isinstance(value, Registry) and id(value) not in seen:
                seen.add(id(value))
                out[f"{name}.{attr}"] = value
    return out


REGISTRIES = _found()
ENTRIES = [(label, n) for label, reg in REGISTRIES.items() for n in reg.names()]


def entries(reg: Registry[Any]) -> list[str]:
    """Return the names of one registry (a parameter list)."""
    return list(reg.names())


def test_the_registries_of_the_brief_are_all_found() -> None:
    found = {id(r) for r in REGISTRIES.values()}
    for reg in (MODELS, DATASETS, PARTITIONS, RATE_PRESETS, DISTRIBUTIONS, PROFILES, COMPRESSORS,
                SWITCHES, INJECTIONS, SOURCES, POLICIES):  # fmt: skip
        assert id(reg) in found, reg


# --- every registry ------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "name"), ENTRIES)
def test_names_are_non_empty_strings_and_get_returns_the_entry(label: str, name: str) -> None:
    reg = REGISTRIES[label]
    assert isinstance(name, str) and name and name.strip() == name
    assert name in reg and reg.get(name) is dict(reg.items())[name]


@pytest.mark.parametrize("label", list(REGISTRIES))
def test_unknown_name_is_a_user_error_naming_the_key_and_every_known_name(label: str) -> None:
    reg = REGISTRIES[label]
    assert len(reg) > 0 and list(reg) == list(reg.names())
    with pytest.raises(UserError) as err:
        reg.get("no-such-name")
    text = str(err.value)
    assert text.startswith(f"{reg.key}: unknown {reg.kind} 'no-such-name'; known: ")
    assert text.endswith(", ".join(reg.names())) and "\n" not in text
    with pytest.raises(UserError, match=r"^my\.key: "):
        reg.get("no-such-name", key="my.key")


@pytest.mark.parametrize("label", list(REGISTRIES))
def test_register_refuses_duplicates_and_unregister_restores(label: str) -> None:
    reg = REGISTRIES[label]
    first = reg.names()[0]
    with pytest.raises(ValueError, match="already registered"):
        reg.register(first, reg.get(first))
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("", reg.get(first))
    before = reg.names()
    reg.register("contract-dummy", reg.get(first))
    try:
        assert reg.names() == (*before, "contract-dummy")
    finally:
        assert reg.unregister("contract-dummy") is reg.get(first)
    assert reg.names() == before


# --- MODELS: logits (N, C) from model(x) ---------------------------------------------------------

SHAPES = ((2, 8, 8), (1, 16), (12,))  # a model takes the first of these it accepts


@pytest.mark.parametrize("name", entries(MODELS))
def test_every_model_builds_and_returns_logits(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in SHAPES:
        try:
            model = build_model(name, shape, 3, width=4, groups=2, gen=gen)
        except UserError:
            continue
        break
    else:
        pytest.fail(f"model {name!r} accepts none of the input shapes {SHAPES}")
    x = torch.randn(5, *shape, generator=gen)  # (N, *shape)
    logits = model(x)
    assert logits.shape == (5, 3) and bool(torch.isfinite(logits).all())


# --- DATASETS: a tiny version of each, from tiny files where it reads files ----------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def _idx(d: Path) -> str:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 6)):
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return str(d)


def _cifar_batch(path: Path, n: int, label_key: bytes, classes: int) -> None:
    rng = np.random.default_rng(n)
    batch = {
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def _cifar10(d: Path) -> str:
    for i in range(1, 6):
        _cifar_batch(d / f"data_batch_{i}", 3, b"labels", 10)
    _cifar_batch(d / "test_batch", 4, b"labels", 10)
    return str(d)


def _cifar100(d: Path) -> str:
    _cifar_batch(d / "train", 12, b"fine_labels", 100)
    _cifar_batch(d / "test", 4, b"fine_labels", 100)
    return str(d)


def _npz(d: Path) -> str:
    rng = np.random.default_rng(0)
    np.savez(d / "d.npz", x=rng.normal(size=(30, 4)), y=np.arange(30) % 3)
    return str(d / "d.npz")


WRITERS: dict[str, Callable[[Path], str]] = {  # file-based dataset -> writer of tiny files
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _idx,
    "fashion_mnist": _idx,
    "npz": _npz,
}


@pytest.mark.parametrize("name", entries(DATASETS))
def test_every_dataset_loads_a_tiny_version(name: str, tmp_path: Path) -> None:
    loader = DATASETS.get(name)
    path = None
    if loader.needs_path:
        # a file-based dataset joins the contract with a writer of tiny files in its format
        assert name in WRITERS, f"{name!r} reads files: add a writer of tiny files to WRITERS"
        path = WRITERS[name](tmp_path)
    ds = load_dataset(name, path=path, n_train=10, n_test=4, seed=0, cache_dir=tmp_path / "c")
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape[0] == ds.y_train.shape[0] == 10 and ds.y_test.shape == (4,)
    assert ds.x_test.shape[1:] == ds.x_train.shape[1:] == ds.input_shape
    assert bool(torch.isfinite(ds.x_train).all()) and ds.sample_bytes > 0
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) < ds.num_classes


# --- PARTITIONS, RATE_PRESETS, DISTRIBUTIONS, PROFILES -------------------------------------------


@pytest.mark.parametrize("name", entries(PARTITIONS))
def test_every_partition_covers_each_index_exactly_once(name: str) -> None:
    labels = torch.arange(100) % 10  # (N,)
    parts = partition(labels, 4, name, torch.Generator().manual_seed(0), num_classes=10)
    assert len(parts) == 4 and all(len(p) > 0 for p in parts)
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(100))


@pytest.mark.parametrize("k", [1, 16])
@pytest.mark.parametrize("name", entries(RATE_PRESETS))
def test_every_rate_preset_gives_k_positive_finite_rates(name: str, k: int) -> None:
    rates = preset_rates(name, k)
    assert rates.shape == (k,) and bool(torch.isfinite(rates).all()) and bool((rates > 0).all())


@pytest.mark.parametrize("name", entries(DISTRIBUTIONS))
def test_every_distribution_gives_k_positive_finite_rates(name: str) -> None:
    rates = distribution_rates(name, 64.0, 24.0, 16)
    assert rates.shape == (16,) and bool(torch.isfinite(rates).all()) and bool((rates > 0).all())


@pytest.mark.parametrize("name", entries(PROFILES))
def test_every_clock_profile_gives_k_devices(name: str, tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"  # for profiles that read a file
    csv.write_text("seconds_per_sample,overhead_s,uplink_bps,downlink_bps,latency_s\n"
                   "0.002,0.02,1e8,1e8,0.005\n")  # fmt: skip
    p = make_profiles(name, 4, csv=str(csv))
    for t in (p.seconds_per_sample, p.overhead_s, p.uplink_bps, p.downlink_bps, p.latency_s):
        assert t.shape == (4,) and bool(torch.isfinite(t).all()) and bool((t >= 0).all())


# --- COMPRESSORS, SWITCHES, INJECTIONS, SOURCES, POLICIES ---------------------------------------

LAYER_SHAPES = ((4, 3), (4,), (2, 3, 2), (5,))
LAYERS = tuple(math.prod(s) for s in LAYER_SHAPES)
K, P = 4, sum(LAYERS)  # 4 devices, 33 values


@pytest.mark.parametrize("name", entries(COMPRESSORS))
def test_every_compressor_round_trips_the_shape(name: str) -> None:
    comp = make_compressor(name, ratio=0.25, layers=LAYERS, shapes=LAYER_SHAPES, levels=16)
    g = torch.randn(K, P, generator=torch.Generator().manual_seed(1))  # (K, P)
    out = comp.decompress(comp.compress(g, torch.Generator().manual_seed(2)))
    assert out.shape == (K, P) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("name", entries(SWITCHES))
def test_every_switch_builds_and_decides(name: str, per_layer: bool) -> None:
    candidates = ("none", "topk:0.25", "powersgd:2")  # what the time-aware switch picks from
    args = SwitchArgs(ratio=0.25, delta=0.3, ewma=0.9, eta=0.5, critical_ratio=1.0,
                      per_layer=per_layer, layers=LAYERS, devices=K, reduce=None,
                      make=lambda r: make_compressor("topk", ratio=r),
                      candidates=candidates, costs=MeasuredCosts(len(candidates), 20),
                      named=lambda n, kw: make_compressor(n, layers=LAYERS, shapes=LAYER_SHAPES,
                                                          **kw),
                      weights=lambda b: b.double() / b.double().sum())  # fmt: skip
    levels, switch = SWITCHES.get(name)(args)
    assert len(levels) >= 1
    acc = torch.randn(K, P, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for epoch in (0, 0, 1):
        level = switch.decide(acc, None, epoch)
        assert 0 <= level < len(levels)
        assert switch.agree(switch.vote(level), K, 1, level) in range(len(levels))
    switch.load_state_dict(switch.state_dict())


@pytest.mark.parametrize("name", entries(INJECTIONS))
def test_every_injection_builds(name: str) -> None:
    labels = torch.arange(40) % 4  # (N,)
    parts = partition(labels, 4, "label_blocks", torch.Generator().manual_seed(0), num_classes=4)
    stage = INJECTIONS.get(name)(0.5, 0.5, labels, 4, parts)
    assert stage is None or callable(stage)


@pytest.mark.parametrize("name", entries(SOURCES))
def test_every_source_name_maps_to_a_factory(name: str) -> None:
    assert callable(SOURCES.get(name))  # opening one needs a broker: tests/live


@pytest.mark.parametrize("name", entries(POLICIES))
def test_every_policy_defaults_to_registered_names(name: str) -> None:
    p = POLICIES.get(name)
    assert p.buffer in BUFFER_POLICIES and p.compressor in COMPRESSORS and p.switch in SWITCHES


# --- config: names are read from the registries when a config is validated -----------------------


def _override(reg: Registry[Any], name: str) -> str:
    """Return the `--set` that selects `name` of a config-backed registry."""
    if reg is DISTRIBUTIONS:
        return f"streams.rates={{dist = '{name}', mean = 5.0}}"
    return f"{reg.key}={name}"


def _config_backed() -> dict[str, Registry[Any]]:
    """Return the registries whose key is a config key (plus the rate-table distribution)."""
    keys = {f"{s}.{k}" for s, (_, checks) in SCHEMA.items() for k in checks}
    out = {reg.key: reg for reg in REGISTRIES.values() if reg.key in keys}
    out[DISTRIBUTIONS.key] = DISTRIBUTIONS
    return out


CONFIG_BACKED = _config_backed()


def test_every_config_key_of_the_brief_reads_a_registry() -> None:
    assert {"model.name", "data.name", "devices.partition", "streams.rates", "clock.profile",
            "compress.name", "compress.policy", "inject.name", "live.source",
            "policy.name"} <= set(CONFIG_BACKED)  # fmt: skip


@pytest.fixture
def dummy(request: pytest.FixtureRequest) -> Iterator[Registry[Any]]:
    """Register 'dummy' (a copy of the first entry) in a registry, and remove it afterwards."""
    reg: Registry[Any] = CONFIG_BACKED[request.param]
    reg.register("dummy", reg.get(reg.names()[0]))
    try:
        yield reg
    finally:
        reg.unregister("dummy")


@pytest.mark.parametrize("dummy", list(CONFIG_BACKED), indirect=True)
def test_a_name_registered_after_import_is_accepted_by_the_config(dummy: Registry[Any]) -> None:
    cfg = load_config(None, [_override(dummy, "dummy")])
    section = dummy.key.split(".")[0]
    assert "'dummy'" in repr(getattr(cfg, section))


@pytest.mark.parametrize("key", list(CONFIG_BACKED))
def test_an_unknown_config_name_names_the_key_and_the_known_names(key: str) -> None:
    reg = CONFIG_BACKED[key]
    with pytest.raises(UserError) as err:
        load_config(None, [_override(reg, "no-such-name")])
    text = str(err.value)
    assert text.startswith(f"{key}: unknown ") and "'no-such-name'" in text
    assert all(name in text.split("known: ")[1].split(", ") for name in reg.names())
    assert "dummy" not in reg
