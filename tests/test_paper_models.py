"""The paper's models (resnet152, vgg19_bn): exact sizes against torchvision's published counts,
sizes by name for emulated communication, and run.device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from scadles.cli.main import main
from scadles.config.load import load_config
from scadles.errors import UserError
from scadles.nn import (
    MODELS,
    PAPER_SIZES,
    build_model,
    emulated_size,
    model_size,
    paper_layout_size,
    param_count,
)
from scadles.nn.paper_models import VGG, Bottleneck
from scadles.training import build, launch

# torchvision's published counts (torchvision.models docs: "num_params"; len(list(parameters())))
TORCHVISION = {"resnet152": (60_192_808, 467), "vgg19_bn": (143_678_248, 70)}
TINY = [
    "data.name=digits", "data.n_train=400", "data.n_test=100", "devices.count=2",
    "train.steps=2", "eval.every=2", "model.name=cnn2d", "model.width=4",
]  # fmt: skip


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_paper_layout_rebuilds_torchvision_counts_exactly(name: str) -> None:
    assert paper_layout_size(name) == TORCHVISION[name] == PAPER_SIZES[name]


def test_paper_sizes_are_the_papers_230_and_548_mb_float32_gradients() -> None:
    mib = {n: 4 * p / 2**20 for n, (p, _) in PAPER_SIZES.items()}
    assert round(mib["resnet152"]) == 230 and round(mib["vgg19_bn"]) == 548
    assert round(PAPER_SIZES["resnet152"][0] / 1e5) == 602  # the paper's 60.2M
    assert round(PAPER_SIZES["vgg19_bn"][0] / 1e5) == 1437  # the paper's 143.7M


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_resnet152_is_torchvisions_with_a_3x3_stem_and_its_own_head(
    norm: str, classes: int
) -> None:
    # the CIFAR stem has 3*64*(49-9) fewer weights; the head is 2048 -> classes, not -> 1000
    tv, tensors = TORCHVISION["resnet152"]
    want = tv - 3 * 64 * (49 - 9) - _linear(2048, 1000) + _linear(2048, classes)
    assert model_size("resnet152", (3, 32, 32), classes, norm=norm, width=64) == (want, tensors)
    assert want == {10: 58_156_618, 100: 58_341_028}[classes]


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_vgg19_bn_is_torchvisions_features_and_one_linear(norm: str, classes: int) -> None:
    tv, tensors = TORCHVISION["vgg19_bn"]
    head = _linear(512 * 7 * 7, 4096) + _linear(4096, 4096) + _linear(4096, 1000)
    want = tv - head + _linear(512, classes)
    got = model_size("vgg19_bn", (3, 32, 32), classes, norm=norm, width=64)
    assert got == (want, tensors - 6 + 2)  # three linears (6 tensors) become one
    assert want == {10: 20_040_522, 100: 20_086_692}[classes]


def test_without_norm_only_the_norm_tensors_go() -> None:
    # resnet152: 155 convs (no bias) + head (2); vgg19_bn: 16 convs with bias + head
    assert model_size("resnet152", (3, 32, 32), 10, width=64)[1] == 155 + 2
    assert model_size("vgg19_bn", (3, 32, 32), 10, width=64)[1] == 16 * 2 + 2


def test_resnet152_has_bottleneck_stages_3_8_36_3_and_152_weighted_layers() -> None:
    model = build_model("resnet152", (3, 32, 32), 10, norm="batch", width=64, meta=True)
    assert isinstance(model.head, nn.Linear)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    blocks = [b for b in model.modules() if isinstance(b, Bottleneck)]
    proj = [b.proj for b in blocks if b.proj is not None]
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)  # CIFAR stem
    assert len(convs) - len(proj) + 1 == 152  # stem + 3 x 50 bottleneck convs + head
    assert len(proj) == 4 and [p.stride for p in proj] == [(1, 1)] + [(2, 2)] * 3
    assert sorted({c.out_channels for c in convs if c.kernel_size == (3, 3)}) == [64, 128, 256, 512]
    per_stage = [sum(1 for b in blocks if b.conv3.out_channels == 256 * 2**s) for s in range(4)]
    assert per_stage == [3, 8, 36, 3] and model.head.in_features == 2048


def test_vgg19_bn_has_16_convs_5_pools_and_the_vgg19_widths() -> None:
    model = build_model("vgg19_bn", (3, 32, 32), 100, norm="batch", width=64, meta=True)
    assert isinstance(model, VGG)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    assert sum(model.pool_after) == 5 and all(c.bias is not None for c in convs)


@pytest.mark.parametrize("name", ["resnet152", "vgg19_bn"])
def test_meta_build_allocates_nothing_and_counts_like_a_real_build(name: str) -> None:
    meta = build_model(name, (3, 16, 16), 7, norm="batch", width=8, meta=True)
    real = build_model(name, (3, 16, 16), 7, norm="batch", width=8)
    assert all(p.is_meta for p in meta.parameters())
    assert param_count(meta) == param_count(real)
    assert model_size(name, (3, 16, 16), 7, norm="batch", width=8)[0] == param_count(real)
    logits = meta(torch.empty(2, 3, 16, 16, device="meta"))  # shapes only, no arithmetic
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet152", "vgg19_bn"])
def test_width_scales_every_stage_from_the_first_stage_channels(name: str) -> None:
    convs = [
        m
        for m in build_model(name, (3, 8, 8), 10, width=16, meta=True).modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert convs[0].out_channels == 16 and max(c.out_channels for c in convs) in (128, 512)


def test_unnormalised_resnet152_starts_with_zero_residual_branches() -> None:
    model = build_model(
        "resnet152", (3, 16, 16), 10, width=16, gen=torch.Generator().manual_seed(0)
    )
    blocks = [b for b in model.modules() if isinstance(b, Bottleneck)]
    assert all(float(b.conv3.weight.detach().abs().sum()) == 0.0 for b in blocks)
    logits = model(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    assert (
        float(logits.detach().abs().max()) < 10.0
    )  # not the 1e7 of 50 un-normalised residual sums


# --- sizes by name: clock.emulate_params ---------------------------------------------------------


def test_emulated_size_paper_names_and_registered_models_at_the_data_shape() -> None:
    assert emulated_size("resnet152", (1, 8, 8), 10) == PAPER_SIZES["resnet152"]
    real = build_model("resnet8", (1, 8, 8), 10, norm="group", width=8)
    want = (param_count(real), len(list(real.parameters())))
    assert emulated_size("resnet8", (1, 8, 8), 10, norm="group", width=8) == want


def test_emulated_size_unknown_name_lists_the_known_ones_on_one_line() -> None:
    with pytest.raises(UserError) as info:
        emulated_size("alexnet", (1, 8, 8), 10)
    text = str(info.value)
    assert "\n" not in text and text.startswith("clock.emulate_params: unknown model 'alexnet'")
    assert all(n in text for n in (*PAPER_SIZES, *MODELS))


def test_emulated_size_of_a_model_that_cannot_take_the_data_names_the_key() -> None:
    with pytest.raises(UserError, match=r"^clock.emulate_params = 'resnet20': model.name"):
        emulated_size("resnet20", (40,), 10)


@pytest.mark.parametrize("value", ["resnet152", "vgg19_bn", "cnn2d", 1234])
def test_config_accepts_a_count_or_a_model_name(value: object) -> None:
    text = f'"{value}"' if isinstance(value, str) else str(value)
    cfg = load_config(None, [f"clock.emulate_params={text}"])
    assert cfg.clock.emulate_params == value


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vgg19", "clock.emulate_params: unknown model 'vgg19'; known: a positive integer or "),
        ("0", "clock.emulate_params must be a positive integer or a model name, got 0"),
        ("6.02e7", "clock.emulate_params must be a positive integer or a model name, got 6"),
        ("true", "clock.emulate_params must be a positive integer or a model name, got True"),
    ],
)
def test_config_refuses_other_emulate_params_in_one_line(text: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(None, [f"clock.emulate_params={text}"])
    assert str(info.value).startswith(needle) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "params"),
    [("vgg19_bn", PAPER_SIZES["vgg19_bn"][0]), ("resnet8", None), (None, None)],
)
def test_engine_charges_communication_at_the_named_size(
    name: str | None, params: int | None
) -> None:
    sets = [
        *TINY,
        "policy.name=ddl",
        "model.name=cnn2d",
        f"clock.emulate_params={name or 'default'}",
    ]
    cfg = load_config(None, sets)
    eng = build.engine(cfg)
    if params is None:  # resnet8 at digits' (1, 8, 8) with the run's model section
        what = name or "cnn2d"
        model = build_model(what, (1, 8, 8), 10, norm="none", width=4)
        params = param_count(model)
    report = eng.step()
    k = cfg.devices.count
    assert report.bytes_sent == pytest.approx(2 * (k - 1) / k * k * 4.0 * params, rel=1e-12)
    assert build.comm_size(cfg, eng.data, eng.model)[0] == params


def test_summary_reports_the_named_size_as_comm_params(tmp_path: Path) -> None:
    sets = [a for kv in [*TINY, "clock.emulate_params=resnet152"] for a in ("--set", kv)]
    assert main(["run", *sets, "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["comm_params"] == PAPER_SIZES["resnet152"][0]


# --- run.device -----------------------------------------------------------------------------------


def test_run_device_defaults_to_auto_and_auto_follows_cuda_availability() -> None:
    assert load_config(None).run.device == "auto"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert build.run_device("auto").type == want
    assert build.run_device("cpu").type == "cpu"


def test_run_device_refuses_unknown_names_at_load() -> None:
    with pytest.raises(UserError, match=r"^run.device: unknown device 'gpu'; known: auto, cpu"):
        load_config(None, ["run.device=gpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [a for kv in [*TINY, "run.device=cuda"] for a in ("--set", kv)]
    assert main(["run", *sets, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("scadles: error: run.device: 'cuda'")
    assert "auto, cpu" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_real_mode_refuses_cuda_before_joining_a_process_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [a for kv in [*TINY, "run.device=cuda"] for a in ("--set", kv)]
    assert launch._rank_main([*sets, "--out", str(tmp_path)]) == 2  # no rendezvous needed
    assert capsys.readouterr().err.startswith("scadles: error: run.device: 'cuda'")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compress", ["none", "topk"])
def test_three_steps_on_cuda_match_the_cpu_run(compress: str) -> None:
    sets = [*TINY, "train.steps=3", "model.name=resnet8", "model.norm=batch",
            f"compress.name={compress}"]  # fmt: skip
    runs = {}
    for device in ("cpu", "cuda"):
        eng = build.engine(load_config(None, [*sets, f"run.device={device}"]))
        assert next(eng.model.parameters()).device.type == device
        reports = [eng.step() for _ in range(3)]
        runs[device] = (reports, eng.evaluate(), [p.detach().cpu() for p in eng.model.parameters()])
    (cpu, cpu_eval, cpu_w), (gpu, gpu_eval, gpu_w) = runs["cpu"], runs["cuda"]
    assert [r.batch_sizes for r in gpu] == [r.batch_sizes for r in cpu]
    for a, b in zip(cpu_w, gpu_w, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)
    assert abs(gpu_eval.top1 - cpu_eval.top1) <= 0.02
