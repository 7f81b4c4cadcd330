"""The public API: the README's library example runs as written; run, compare, Dataset builders."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import scadles
from scadles.cli.main import main as cli_main
from scadles.errors import UserError

README = Path(__file__).resolve().parents[1] / "README.md"
SETS = [
    "data.name=synthetic",
    "data.n_train=600",
    "data.n_test=200",
    "model.name=mlp",
    "devices.count=3",
    "train.steps=12",
    "eval.every=6",
    "eval.target_accuracy=0.3",
]
SUMMARY_KEYS = {"policy", "steps", "final_accuracy", "time_to_target_s", "samples_arrived"}


def tensors(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return n samples of a separable 10-class problem: x (n, *shape), y (n,)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, *shape, generator=torch.Generator().manual_seed(99))  # (C, *shape)
    y = torch.randint(0, 10, (n,), generator=gen)  # (n,)
    return means[y] + 0.5 * torch.randn(n, *shape, generator=gen), y


def user_data() -> scadles.Dataset:
    return scadles.Dataset.from_tensors(*tensors(240, (20,), 1), *tensors(80, (20,), 2))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_host_times(comp: dict[str, Any]) -> dict[str, Any]:
    """Return the comparison with the host-dependent wall-clock fields removed."""
    runs = {p: {k: v for k, v in s.items() if k != "host_seconds"} for p, s in comp["runs"].items()}
    return dict(comp, runs=runs)


def readme_example() -> str:
    """Return the first ```python block under the README's "Use as a library" heading."""
    text = README.read_text()
    section = text.split("## Use as a library", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "README: no python block under 'Use as a library'"
    return found.group(1)


def test_readme_library_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), scope)
    assert scope["summary"].keys() >= SUMMARY_KEYS
    assert set(scope["comparison"]["runs"]) == {"scadles", "ddl"}
    assert (tmp_path / "runs" / "mine" / "summary.json").is_file()
    assert (tmp_path / "runs" / "cmp" / "comparison.json").is_file()


def test_compare_plain_module_on_user_tensors(tmp_path: Path) -> None:
    cfg = scadles.load_config(None, SETS)
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    comp = scadles.compare(cfg, model=model, data=user_data(), out=tmp_path)
    assert set(comp["runs"]) == {"scadles", "ddl"}
    assert {"target_accuracy", "speedup", "accuracy_delta"} <= comp.keys()
    assert json.loads((tmp_path / "comparison.json").read_text()) == json.loads(json.dumps(comp))
    assert (tmp_path / "comparison.md").read_text().count("|") > 10
    for policy in ("scadles", "ddl"):
        assert json.loads((tmp_path / policy / "summary.json").read_text())["steps"] == 12
    # the caller's module is copied per policy, never trained itself
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # both copies start from the same weights: the step-0 evaluations agree exactly
    first = [read_jsonl(tmp_path / p / "evals.jsonl")[0] for p in ("scadles", "ddl")]
    assert first[0]["step"] == first[1]["step"] == 0
    assert first[0]["loss"] == first[1]["loss"] and first[0]["top1"] == first[1]["top1"]
    # ScaDLES trains on rate-proportional batches, DDL on the fixed batch
    batches = {p: read_jsonl(tmp_path / p / "steps.jsonl")[0]["batch_sizes"] for p in comp["runs"]}
    assert batches["ddl"] == [cfg.policy.batch] * 3
    assert batches["scadles"] != batches["ddl"]


def test_run_without_out_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = scadles.load_config(None, SETS)
    summary = scadles.run(cfg, model=mlp(), data=user_data())
    assert sorted(tmp_path.rglob("*")) == []
    assert summary.keys() >= SUMMARY_KEYS and summary["steps"] == 12


def test_run_accepts_a_pair_of_torch_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = scadles.load_config(None, [*SETS, "train.steps=3", "eval.every=3"])
    pair = (
        torch.utils.data.TensorDataset(*tensors(120, (20,), 1)),
        torch.utils.data.TensorDataset(*tensors(40, (20,), 2)),
    )
    assert scadles.run(cfg, model=mlp(), data=pair)["steps"] == 3
    assert sorted(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("shape", [(40,), (1, 8, 8)])
def test_from_tensors_any_sample_shape(shape: tuple[int, ...]) -> None:
    x, y = tensors(50, shape)
    x_te, y_te = tensors(20, shape, seed=1)
    data = scadles.Dataset.from_tensors(x.double(), y.int(), x_te, y_te)
    assert data.input_shape == shape and data.x_train.dtype == torch.float32
    assert data.y_train.dtype == torch.int64 and torch.equal(data.y_train, y)
    assert data.num_classes == int(torch.cat([y, y_te]).max()) + 1
    assert data.sample_bytes == 4 * int(torch.tensor(shape).prod())
    assert scadles.Dataset.from_tensors(x, y, x_te, y_te, num_classes=12).num_classes == 12


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"y_train": torch.zeros(49, dtype=torch.int64)}, "train: x must be (N, *shape)"),
        ({"y_train": torch.zeros(50)}, "labels must be integers"),
        ({"y_test": torch.full((20,), -1)}, "labels must be >= 0"),
        ({"x_train": torch.zeros(0, 40), "y_train": torch.zeros(0, dtype=torch.int64)}, "empty"),
        ({"x_test": torch.zeros(20, 41)}, "test samples have shape (41,)"),
        ({"x_train": torch.full((50, 40), float("nan"))}, "NaN"),
        ({"num_classes": 3}, "num_classes must be >"),
    ],
)
def test_from_tensors_rejects_bad_input(change: dict[str, Any], needle: str) -> None:
    (x, y), (x_te, y_te) = tensors(50, (40,)), tensors(20, (40,), seed=1)
    y, y_te = y.clamp(max=5), y_te.clamp(max=5)
    args: dict[str, Any] = {"x_train": x, "y_train": y, "x_test": x_te, "y_test": y_te}
    args |= change
    with pytest.raises(UserError, match=re.escape(needle)):
        scadles.Dataset.from_tensors(**args)


class Items(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """A map-style dataset of (x, int label) items, as torchvision's are."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@pytest.mark.parametrize("kind", ["tensor_dataset", "items"])
def test_from_torch_equals_from_tensors(kind: str) -> None:
    (x, y), (x_te, y_te) = tensors(30, (1, 8, 8)), tensors(10, (1, 8, 8), seed=1)
    wrap = torch.utils.data.TensorDataset if kind == "tensor_dataset" else Items
    got = scadles.Dataset.from_torch(wrap(x, y), wrap(x_te, y_te))
    want = scadles.Dataset.from_tensors(x, y, x_te, y_te)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(got, field), getattr(want, field))
    assert (got.num_classes, got.sample_bytes) == (want.num_classes, want.sample_bytes)
    with pytest.raises(UserError, match="item 0 must be a pair"):
        scadles.Dataset.from_torch([x[0]], wrap(x_te, y_te))  # type: ignore[arg-type]


def test_cli_compare_equals_library_compare(tmp_path: Path) -> None:
    args = [a for s in SETS for a in ("--set", s)]
    threads = ["--threads", str(torch.get_num_threads())]  # the library keeps torch's count
    assert cli_main(["compare", *args, *threads, "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    from_cli = json.loads((tmp_path / "cli" / "comparison.json").read_text())
    comp = scadles.compare(scadles.load_config(None, SETS), out=tmp_path / "api")
    assert without_host_times(json.loads(json.dumps(comp))) == without_host_times(from_cli)


def test_unknown_policy_names_the_argument() -> None:
    cfg = scadles.load_config(None, SETS)
    with pytest.raises(UserError, match=r"policies: unknown policy 'foo'; known: scadles, ddl"):
        scadles.compare(cfg, policies=("scadles", "foo"))


def test_public_names() -> None:
    assert {"run", "compare", "load_config", "Config", "Dataset", "LiveSource"} <= set(
        scadles.__all__
    )
    assert all(hasattr(scadles, name) for name in scadles.__all__)


class QueueSource:
    """A user's own live source: samples pushed into per-device queues by the user's code.

    Implements the `scadles.LiveSource` protocol with nothing from the package but `Delivery`;
    here a thread pushes 4 samples per device every 20 ms (200 samples/s per device).
    """

    def __init__(self, devices: list[int], x: torch.Tensor, y: torch.Tensor) -> None:
        import threading

        self.devices = len(devices)
        self.x, self.y = x, y
        self.queues: list[list[int]] = [[] for _ in devices]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = [0] * self.devices
        self.thread = threading.Thread(target=self._push, daemon=True)
        self.thread.start()

    def _push(self) -> None:
        while not self.stop.wait(0.02):
            with self.lock:
                for d, q in enumerate(self.queues):
                    q += [(self.sent[d] + i) % len(self.y) for i in range(4)]
                    self.sent[d] += 4

    def poll(self, want: list[int], timeout_s: float) -> list[scadles.Delivery]:
        import time

        end = time.monotonic() + timeout_s
        while not any(self.queues) and time.monotonic() < end:
            time.sleep(0.005)
        out = []
        with self.lock:
            for d, w in enumerate(want):
                rows, self.queues[d] = self.queues[d][:w], self.queues[d][w:]
                ids = [f"{d}-{r}" for r in rows]
                out.append(scadles.Delivery(self.x[rows], self.y[rows], ids, 0))
        return out

    def done(self, device: int, ids: list[str]) -> None:
        """Nothing to acknowledge."""

    def positions(self) -> dict[str, int]:
        return {}

    def broker_count(self, device: int) -> int:
        with self.lock:
            return self.sent[device]

    def skipped(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def test_run_plain_module_on_a_user_live_source() -> None:
    data = user_data()
    sets = [s for s in SETS if not s.startswith("train.steps")]
    cfg = scadles.load_config(None, [*sets, "train.steps=5", "streams.window_s=0.2"])
    opened: list[QueueSource] = []

    def source(devices: list[int], streams: list[str]) -> QueueSource:
        opened.append(QueueSource(devices, data.x_train, data.y_train))
        return opened[0]

    model = mlp()
    before = copy.deepcopy(model.state_dict())
    summary = scadles.run(cfg, model=model, data=data, source=source, out=None)
    assert summary["steps"] == 5 and summary["source"] == "user"
    assert summary["samples_arrived"] == (
        summary["samples_trained"] + summary["samples_dropped"] + summary["samples_held"]
    )
    counts, sent = summary["broker_counts"], opened[0].sent  # counts: read before the close
    assert all(0 < c <= s for c, s in zip(counts, sent, strict=True))
    assert sum(counts) >= summary["samples_arrived"]
    assert all(sum(r.batch_sizes) > 0 for r in summary.steps)
    assert not opened[0].thread.is_alive()  # the run closed the user's source
    assert any(not torch.equal(p, before[n]) for n, p in model.state_dict().items())
