"""A kill during a checkpoint write never leaves a corrupt checkpoint (temp file + rename).

A child process rewrites a ~16 MB checkpoint in a loop; the test SIGKILLs it at random moments,
mid-write more often than not, and then the checkpoint on disk must load and be one of the
complete versions the child wrote.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from scadles.training import checkpoint

CONFIG = {"train": {"seed": 1}}
WRITER = """
import sys, torch
from pathlib import Path
from scadles.training import checkpoint
path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    big = torch.full((4_000_000,), float(i))  # 16 MB: the write takes a while
    checkpoint.save(path, {"config": {"train": {"seed": 1}}, "version": i, "big": big})
    print(i, flush=True)
"""


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / checkpoint.FILE
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        child.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = checkpoint.load(path, CONFIG)  # never raises: the file is always whole
        assert bool((state["big"] == float(state["version"])).all())
    leftovers = [p for p in tmp_path.iterdir() if p.name != checkpoint.FILE]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # only temp files of killed writes
