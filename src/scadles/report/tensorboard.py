"""TensorBoard event files from step and evaluation records (the optional `tensorboard` extra).

Each numeric field of a StepReport is logged as the scalar ``step/<field>`` and each of an
EvalReport as ``eval/<field>``, at global step ``obj.step``; list fields (per-device sizes) are
left to steps.jsonl.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any

from scadles.errors import UserError
from scadles.report.records import EvalReport, StepReport

MISSING = (
    "--tensorboard: the tensorboard package is not installed; pip install 'scadles[tensorboard]'"
)


def scalars(obj: StepReport | EvalReport) -> dict[str, float]:
    """Return a record's numeric fields (bools as 0/1) as tag -> value, tags prefixed by kind."""
    prefix = "step" if isinstance(obj, StepReport) else "eval"
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name != "step" and isinstance(value, int | float):  # bool is an int
            out[f"{prefix}/{f.name}"] = float(value)
    return out


class TensorBoardWriter:
    """Write StepReport and EvalReport scalars to a TensorBoard log directory."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(MISSING) from None
        self.log_dir = Path(log_dir)
        self._w: Any = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, obj: StepReport | EvalReport) -> None:
        """Log obj's numeric fields at global step obj.step."""
        if not isinstance(obj, StepReport | EvalReport):
            raise TypeError(f"expected a StepReport or EvalReport, got {type(obj).__name__}")
        if self._w is None:
            raise ValueError(f"write to closed TensorBoardWriter({self.log_dir})")
        for tag, value in scalars(obj).items():
            self._w.add_scalar(tag, value, global_step=obj.step)

    def flush(self) -> None:
        """Flush pending events to disk."""
        if self._w is not None:
            self._w.flush()

    def close(self) -> None:
        """Flush and close the event file; further writes fail."""
        if self._w is not None:
            self._w.close()
            self._w = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
