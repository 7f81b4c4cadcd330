"""Step time of a plain per-device PyTorch loop / scadles at 100 devices (also DDP, Flower).

The same model (the demo's cnn1d), data (MNIST-1D) and per-device batches (normal-S1 rates, the
ScaDLES policy: about 64 rows per device) at K = 16 and 100 devices. One synchronous step = every
device trains on its batch, the gradients are averaged (weighted by batch size, paper Eq. 4b),
one update. Done by:

  ours    the scadles simulator: ``Engine.step`` (streams, buffers and clock included)
  plain   a per-device loop in plain PyTorch: forward/backward per device, gradients accumulated
          with weight b_i / N, one SGD step; alternates with ours step by step in one process
  ddp     DistributedDataParallel, one process per device under torchrun (gloo on loopback, one
          thread each): each rank trains on its device's batch, DDP all-reduce, SGD step; a K
          whose processes would not fit in the available memory is skipped with the estimate
  flower  Flower's simulation engine (Ray), one local step per round (plain SGD, so averaging the
          returned weights by num-examples is the averaged gradient step); skipped when flwr is
          not installed (``pip install -e '.[peers]'``)

The batches ours trained on are recorded and replayed to the other tools. Ours and plain run
one thread each (a second intra-op thread stalls on a loaded 2-core machine); DDP one thread per
rank, Flower two Ray actors of one CPU each, so the peers may use both cores. Per-step times are
medians (DDP: the slowest rank per step; Flower: one round, server side, after a first round that
starts Ray's actors); plain's ratio to ours is the median of the step-by-step ratios. Start-up
(launch until the tool can run a step, imports included; Flower's includes its first round) is
reported apart, torchrun's rendezvous and Flower's first round in the note. Memory: the peak of
the summed RSS of the tool's process tree, sampled every 0.2 s (shared library pages count once
per process), from a run of that tool alone.
Printed last: the median over steps of plain / ours at K = 100 (> 1: scadles is faster).
Usage: python bench/peers.py [--quick] [--ks 16,100] [--steps N] [--rounds N] [--only TOOLS]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
WARMUP = 5
TOOLS = ("plain", "ddp", "flower")
REPLAY = 30  # recorded steps replayed to DDP and Flower (cyclically)
MEM_STEPS = 20  # steps the memory children run after warm-up
MEM_HEADROOM = 0.8  # use at most this fraction of MemAvailable for DDP processes


# ---------------------------------------------------------------- memory of a process tree


def _rss_mib(pid: int) -> float:
    """Return a process's resident set size in MiB (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def tree_rss_mib(root: int) -> float:
    """Return the summed RSS (MiB) of root and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_mib(pid)
        todo.extend(children.get(pid, []))
    return total


def mem_available_mib() -> float:
    """Return MemAvailable from /proc/meminfo in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def vm_hwm_mib() -> float:
    """Return this process's peak RSS (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass(slots=True)
class Watched:
    """What a watched child process left: its last stdout line as JSON, peak tree RSS, wall."""

    result: dict[str, Any]
    peak_mib: float
    launched: float  # time.time() at launch
    wall_s: float
    error: str = ""


def watch(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> Watched:
    """Run cmd, sample its process tree's summed RSS every 0.2 s, parse its JSON result line."""
    launched = time.time()
    t0 = time.perf_counter()
    peak = [0.0]
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
        env={**os.environ, **(env or {})},
    ) as p:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], tree_rss_mib(p.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += f"\ntimed out after {timeout:.0f} s"
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if p.returncode:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return Watched({}, peak[0], launched, wall, f"exit status {p.returncode}: {tail}")
    res: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return Watched(res, max(peak[0], float(res.get("hwm_mib", 0.0))), launched, wall)


# ---------------------------------------------------------------- shared set-up


def make_config(k: int) -> Any:
    """Return the demo config at K devices, with budgets no step loop reaches."""
    import scadles

    return scadles.load_config(
        None, [f"devices.count={k}", "train.steps=1000000", "eval.every=1000000"]
    )


class Recorder:
    """A feed wrapper that keeps each step's union batch (x, y, b) for the other tools."""

    def __init__(self, feed: Any) -> None:
        self.inner = feed
        self.last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def fill(self, t: float, step: int) -> Any:
        f = self.inner.fill(t, step)
        self.last = (f.x, f.y, f.b)  # (N, 1, 40), (N,), (K,); rows device-major
        return f

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def sgd(model: torch.nn.Module, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Return the demo's optimizer (lr 0.1, weight decay 1e-4) over model."""
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=1e-4)


def plain_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, per_dev: list[tuple[torch.Tensor, ...]]
) -> None:
    """One synchronous step as a per-device loop: sum_i (b_i / N) grad_i, then one SGD step."""
    n = sum(len(y) for _, y in per_dev)
    opt.zero_grad(set_to_none=True)
    for x, y in per_dev:
        (F.cross_entropy(model(x), y) * (len(y) / n)).backward()  # type: ignore[no-untyped-call]
    opt.step()


def split(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Return each device's (x_i, y_i): the data as it sits on the devices before a step."""
    sizes = b.tolist()
    return list(zip(x.split(sizes), y.split(sizes), strict=True))  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- children (one tool each)


def child_ours(k: int, steps: int) -> dict[str, Any]:
    """Build the simulator at K devices and run warm-up + steps; report readiness and memory."""
    torch.set_num_threads(1)
    from scadles.training import build

    eng = build.engine(make_config(k))
    ready = time.time()
    for _ in range(WARMUP + steps):
        eng.step()
    return {"ready": ready, "hwm_mib": vm_hwm_mib()}


def child_plain(file: str, steps: int) -> dict[str, Any]:
    """Replay the recorded batches through the per-device loop; report readiness and memory."""
    torch.set_num_threads(1)
    blob = torch.load(file, weights_only=False)
    model, batches = blob["model"], blob["batches"]
    opt = sgd(model)
    ready = time.time()
    for i in range(WARMUP + steps):
        plain_step(model, opt, split(*batches[i % len(batches)]))
    return {"ready": ready, "hwm_mib": vm_hwm_mib()}


def child_ddp(file: str, out: str, steps: int) -> None:
    """One torchrun rank: DDP over device `rank`'s rows of each recorded batch; rank 0 writes."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    entered = time.time()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rdzv = time.time() - entered
    rank, world = dist.get_rank(), dist.get_world_size()
    blob = torch.load(file, weights_only=False)
    model = blob["model"]
    ddp = DistributedDataParallel(model)
    opt = sgd(model)
    mine = []
    for x, y, b in blob["batches"]:
        lo = int(b[:rank].sum())
        hi = lo + int(b[rank])
        # DDP averages over ranks equally; scaling by b_i K / N makes that the weighted mean
        mine.append((x[lo:hi], y[lo:hi], float(b[rank]) * world / float(b.sum())))
    dist.barrier()
    ready = time.time()
    times: list[float] = []
    for i in range(WARMUP + steps):
        x, y, scale = mine[i % len(mine)]
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(ddp(x), y) * scale).backward()  # type: ignore[no-untyped-call]
        opt.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    slowest = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    figures = torch.tensor([rdzv, ready, vm_hwm_mib()], dtype=torch.float64)
    top = figures.clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    dist.all_reduce(figures, op=dist.ReduceOp.SUM)
    if rank == 0:
        res = {
            "times": slowest.tolist(),
            "rdzv_s": float(top[0]),
            "ready": float(top[1]),
            "ranks_hwm_mib": float(figures[2]),
        }
        Path(out).write_text(json.dumps(res))
    dist.destroy_process_group()


# Flower: the apps live in this module (imported as `peers`, not __main__) so that Ray's workers
# import them by reference and keep the replayed batches per worker process.
_CACHE: dict[str, Any] = {}


def _blob() -> Any:
    file = os.environ["SCADLES_PEERS_FILE"]
    if file not in _CACHE:
        torch.set_num_threads(1)
        _CACHE[file] = torch.load(file, weights_only=False)
    return _CACHE[file]


def flower_train(msg: Any, context: Any) -> Any:
    """A ClientApp's train: one local plain-SGD step on this device's rows of the round's batch."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    blob = _blob()
    dev = int(context.node_config["partition-id"])
    x, y, b = blob["batches"][int(msg.content["config"]["step"]) % len(blob["batches"])]
    lo = int(b[:dev].sum())
    hi = lo + int(b[dev])
    model = copy.deepcopy(blob["model"])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = sgd(model, momentum=0.0)  # one local step: a momentum buffer would not survive it
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x[lo:hi]), y[lo:hi]).backward()  # type: ignore[no-untyped-call]
    opt.step()
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"n": hi - lo})}
    )
    return Message(content, reply_to=msg)


def child_flower(file: str, k: int, rounds: int) -> dict[str, Any]:
    """Run Flower's simulation with K supernodes; time each round (send, train, average)."""
    os.environ["SCADLES_PEERS_FILE"] = file
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    import peers  # this file as a module, so Ray pickles the apps by reference

    model = torch.load(file, weights_only=False)["model"]
    res: dict[str, Any] = {"times": []}
    client = ClientApp()
    client.train()(peers.flower_train)
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        nodes = list(grid.get_node_ids())
        while len(nodes) < k:
            time.sleep(0.1)
            nodes = list(grid.get_node_ids())
        res["ready"] = time.time()
        state = model.state_dict()
        for r in range(1 + rounds):  # the first round starts the Ray actors: warm-up
            t0 = time.perf_counter()
            arrays = ArrayRecord(state)
            msgs = [
                Message(
                    RecordDict({"arrays": arrays, "config": ConfigRecord({"step": r})}),
                    dst_node_id=n,
                    message_type="train",
                )
                for n in nodes
            ]
            replies = [m for m in grid.send_and_receive(msgs) if m.has_content()]
            if len(replies) != k:
                raise RuntimeError(f"round {r}: {len(replies)} of {k} clients replied")
            sds = [m.content["arrays"].to_torch_state_dict() for m in replies]
            w = torch.tensor([float(m.content["metrics"]["n"]) for m in replies])  # (K,)
            w = w / w.sum()
            state = {  # weighted mean of the K returned tensors, per tensor
                name: torch.einsum("k,k...->...", w, torch.stack([sd[name] for sd in sds]))
                for name in state
            }
            if r == 0:
                res["first_done"] = time.time()
            else:
                res["times"].append(time.perf_counter() - t0)

    res["started"] = time.time()
    cfg: Any = {  # flwr's BackendConfig
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "object_store_memory": 256 * 2**20, "log_to_driver": False},
    }
    run_simulation(server_app=server, client_app=client, num_supernodes=k, backend_config=cfg)
    if len(res["times"]) != rounds:
        raise RuntimeError(f"flower ran {len(res['times'])} of {rounds} rounds")
    return {**res, "hwm_mib": vm_hwm_mib()}


# ---------------------------------------------------------------- the driver


@dataclass(slots=True)
class Row:
    """One tool at one K: per-step seconds, peak MiB, start-up, or why it was skipped."""

    tool: str
    k: int
    step_s: float = float("nan")
    peak_mib: float = float("nan")
    startup_s: float = float("nan")
    note: str = ""
    ratios: list[float] = field(default_factory=list)  # per-step tool / ours, where paired


def mem_file(file: Path) -> Path:
    """Return the path of the small replay file the plain loop's memory child loads."""
    return file.with_suffix(".mem.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alternate(k: int, steps: int, file: Path) -> tuple[Row, Row]:
    """Time ours and the plain loop step by step in turn; save the batches for the others."""
    from scadles.training import build

    torch.set_num_threads(1)
    eng = build.engine(make_config(k))
    model = copy.deepcopy(eng.model)
    opt = sgd(model)
    rec = Recorder(eng.feed)
    eng.feed = rec
    ours_s: list[float] = []
    plain_s: list[float] = []
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    init = copy.deepcopy(model)
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        eng.step()
        t1 = time.perf_counter()
        assert rec.last is not None
        per_dev = split(*rec.last)  # the devices hold their rows before the step starts
        t2 = time.perf_counter()
        plain_step(model, opt, per_dev)
        t3 = time.perf_counter()
        if i >= WARMUP:
            ours_s.append(t1 - t0)
            plain_s.append(t3 - t2)
            if len(batches) < REPLAY:
                batches.append(rec.last)
    # the replay file for DDP and Flower; the plain loop's memory child gets WARMUP batches only,
    # so that recorded data it would not hold in a real run does not count against it
    torch.save({"model": init, "batches": batches}, file)
    torch.save({"model": init, "batches": batches[:WARMUP]}, mem_file(file))
    ours = Row("ours", k, statistics.median(ours_s))
    plain = Row("plain", k, statistics.median(plain_s))
    plain.ratios = [p / o for p, o in zip(plain_s, ours_s, strict=True)]
    return ours, plain


def run_ddp(k: int, steps: int, file: Path, per_rank_mib: float) -> Row:
    """Run K DDP ranks under torchrun, unless their estimated memory does not fit."""
    need = per_rank_mib * (k + 1)  # K ranks and the torchrun agent
    avail = mem_available_mib()
    if need > MEM_HEADROOM * avail:
        return Row(
            "ddp",
            k,
            note=f"skipped: ddp K={k}: {k + 1} processes x ~{per_rank_mib:.0f} MiB = "
            f"~{need / 1024:.1f} GiB > {MEM_HEADROOM:.0%} of {avail / 1024:.1f} GiB available",
        )
    out = file.with_suffix(".ddp.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={k}"]
    cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}"]
    cmd += [str(HERE / "peers.py"), "--child", "ddp", str(file), str(out), str(steps)]
    w = watch(cmd, env={"OMP_NUM_THREADS": "1"})
    if w.error or not out.exists():
        return Row("ddp", k, peak_mib=w.peak_mib, note=f"skipped: ddp K={k} failed: {w.error}")
    res = json.loads(out.read_text())
    row = Row("ddp", k, statistics.median(res["times"]), max(w.peak_mib, res["ranks_hwm_mib"]))
    row.startup_s = res["ready"] - w.launched
    row.note = f"rendezvous {res['rdzv_s']:.1f} s"
    return row


def run_flower(k: int, rounds: int, file: Path) -> Row:
    """Run Flower's simulation in a child process, or say why it is skipped."""
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        return Row("flower", k, note="skipped: flwr is not installed (pip install -e '.[peers]')")
    cmd = [sys.executable, str(HERE / "peers.py"), "--child", "flower", str(file), str(k)]
    env = {"FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "OMP_NUM_THREADS": "1"}
    w = watch([*cmd, str(rounds)], env=env, timeout=1800)
    if w.error:
        return Row("flower", k, peak_mib=w.peak_mib, note=f"skipped: flwr K={k} failed: {w.error}")
    row = Row("flower", k, statistics.median(w.result["times"]), w.peak_mib)
    row.startup_s = w.result["first_done"] - w.launched
    first = w.result["first_done"] - w.result["ready"]
    row.note = f"first round (Ray start, {k} supernodes) {first:.1f} s"
    return row


def table(rows: list[Row], ours: dict[int, Row]) -> str:
    """Return the aligned result table; ratios are tool / ours (> 1: scadles is faster/smaller)."""
    head = ("tool", "K", "step ms", "x ours", "peak MiB", "x ours", "start-up s", "note")
    body = []
    for r in rows:
        o = ours[r.k]
        t_ratio = statistics.median(r.ratios) if r.ratios else r.step_s / o.step_s
        body.append(
            (
                r.tool,
                str(r.k),
                f"{r.step_s * 1e3:.1f}",
                "" if r.tool == "ours" else f"{t_ratio:.2f}",
                f"{r.peak_mib:.0f}",
                "" if r.tool == "ours" else f"{r.peak_mib / o.peak_mib:.2f}",
                f"{r.startup_s:.1f}",
                r.note,
            )
        )
    cells = [head, *body]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> tuple[list[int], set[str]]:
    """Return the device counts and tools asked for; raise ValueError naming a bad value."""
    try:
        ks = [int(v) for v in args.ks.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise ValueError(f"--ks must be positive integers, comma-separated, got {args.ks!r}")
    only = set(args.only.split(","))
    if not only <= set(TOOLS):
        raise ValueError(f"--only must name tools among {', '.join(TOOLS)}, got {args.only!r}")
    for name in ("steps", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    return ks, only


def child_main(argv: list[str]) -> None:
    """Dispatch `--child TOOL ARGS...` (the processes the driver starts)."""
    tool, args = argv[0], argv[1:]
    if tool == "ddp":
        child_ddp(args[0], args[1], int(args[2]))
        return
    if tool == "ours":
        res = child_ours(int(args[0]), int(args[1]))
    elif tool == "plain":
        res = child_plain(args[0], int(args[1]))
    else:
        res = child_flower(args[0], int(args[1]), int(args[2]))
    print(json.dumps(res), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ks", default="16,100", help="device counts, comma-separated (default 16,100)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per K (default 100)")
    p.add_argument("--rounds", type=int, default=5, help="timed Flower rounds per K (default 5)")
    p.add_argument("--only", default=",".join(TOOLS), help="peers to run (plain always runs)")
    p.add_argument("--quick", action="store_true", help="30 steps, 2 Flower rounds")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 30, 2
    try:
        ks, only = check_args(args)
    except ValueError as e:
        print(f"peers.py: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    rows: list[Row] = []
    ours: dict[int, Row] = {}
    skipped: list[str] = []
    per_rank = float("nan")
    with tempfile.TemporaryDirectory(prefix="scadles-peers-") as tmp:
        for k in ks:
            file = Path(tmp) / f"batches-{k}.pt"
            o, plain = alternate(k, args.steps, file)
            me = [sys.executable, str(HERE / "peers.py"), "--child"]
            wo = watch([*me, "ours", str(k), str(MEM_STEPS)])
            o.peak_mib = wo.peak_mib
            o.startup_s = wo.result.get("ready", float("nan")) - wo.launched
            wp = watch([*me, "plain", str(mem_file(file)), str(MEM_STEPS)])
            plain.peak_mib = wp.peak_mib
            plain.startup_s = wp.result.get("ready", float("nan")) - wp.launched
            ours[k] = o
            rows += [o, plain]
            print(
                f"K={k}: ours {o.step_s * 1e3:.1f} ms, plain {plain.step_s * 1e3:.1f} ms per step"
            )
            if math.isnan(per_rank):  # first K: a rank holds about what the plain process holds
                per_rank = wp.peak_mib
            if "ddp" in only:
                d = run_ddp(k, min(args.steps, REPLAY), file, per_rank)
                print(f"K={k}: ddp {d.step_s * 1e3:.1f} ms per step {d.note}", flush=True)
                if d.note.startswith("skipped"):
                    skipped.append(d.note)
                else:
                    per_rank = d.peak_mib / (k + 1)
                    rows.append(d)
            if "flower" in only:
                f = run_flower(k, args.rounds, file)
                print(f"K={k}: flower {f.step_s * 1e3:.1f} ms per round {f.note}", flush=True)
                if f.note.startswith("skipped"):
                    skipped.append(f.note)
                else:
                    rows.append(f)
            print(f"K={k} done; load average {os.getloadavg()[0]:.2f}", flush=True)
    print()
    print(table(rows, ours))
    print()
    for s in skipped:
        print(s)
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")
    last = next(r for r in rows if r.tool == "plain" and r.k == (100 if 100 in ks else max(ks)))
    print(f"ratio below: plain per-device loop / ours at K={last.k}, median over steps")
    print(f"ratio: {statistics.median(last.ratios):.3f}")


if __name__ == "__main__":
    main()
