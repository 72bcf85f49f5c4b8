"""What a training run writes as it goes: the loss terms summed on the device between two log
lines (`MetricsWindow`, one host sync per line), RUN/metrics.jsonl and the same numbers as
TensorBoard scalars in RUN/tb/ (`MetricsLog`), and the trimming of lines a resume writes again."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from repro import distributed
from repro.atomic import atomic_write_text


class MetricsWindow:
    """Loss terms summed on the device between two log lines; `flush` reads them back (one host
    sync) after checking, on every rank, that they are finite."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.images = 0          # over all ranks
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """One step's terms (scalars on the device) and its per-rank batch size."""
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.steps += 1
        self.images += batch_size * self.world_size

    def flush(self) -> dict | None:
        """Averages over the window, online training accuracy over its labelled samples and images/s;
        None if any term is non-finite on any rank (a collective: every rank must call it)."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys])
        if not distributed.all_finite(values):
            return None
        totals = dict(zip(keys, values.tolist()))
        record = {k: v / self.steps for k, v in totals.items() if k not in ("correct", "labelled")}
        if totals.get("labelled", 0) > 0:
            record["online_train_top1"] = totals["correct"] / totals["labelled"]
        record["images_per_s"] = self.images / max(time.perf_counter() - self.start, 1e-9)
        self._reset()
        return record


TENSORBOARD_DIR = "tb"   # inside the run folder: RUN/tb/events.out.tfevents.*


class MetricsLog:
    """metrics.jsonl: one JSON line per record, flushed at once (a crash loses nothing written); the
    same numbers as TensorBoard scalars in `tensorboard_dir`, tag `metrics/<key>` at the record's
    step ("step" and "epoch" are the axis, not scalars), flushed at the same points. A no-op on
    ranks other than 0.

    Resuming at step s: trim_metrics has kept the lines of steps <= s. TensorBoard is told to drop
    every event of a step >= s (SummaryWriter's purge_step; TensorBoard's fast loader drops a
    series' points at and after a step it sees again), then the kept lines of step s are written
    again: each step's value appears once in the view, as in the file. `follow` mirrors another
    JSONL file of the run (spectra.jsonl, whose own trimming drops steps >= s) at the same points."""

    def __init__(self, path: Path, enabled: bool = True, *, tensorboard_dir: Path | None = None,
                 resume_step: int = 0):
        self.path = Path(path)
        self.file = open(path, "a") if enabled else None
        self.board = open_tensorboard(tensorboard_dir, purge_step=resume_step) if enabled and tensorboard_dir else None
        self._followed: list[list] = []   # [path, bytes already mirrored, tag prefix]
        if self.board and resume_step:
            kept = self.path.read_text().splitlines() if self.path.exists() else []
            for record in (json.loads(line) for line in kept if line):
                if record.get("step") == resume_step:
                    self._add_scalars("metrics", record)
            self.board.flush()

    def follow(self, path: Path, prefix: str) -> None:
        """Mirror the lines appended to the JSONL file `path` from now on as TensorBoard scalars
        `<prefix>/<key>` at each line's "step"."""
        if self.board:
            self._followed.append([Path(path), Path(path).stat().st_size if Path(path).exists() else 0, prefix])

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.board:
            self._add_scalars("metrics", record)
            self._mirror_followed()
            self.board.flush()

    def _add_scalars(self, prefix: str, record: dict) -> None:
        for key, value in record.items():
            # JSON null (e.g. an infinite condition number) and the step/epoch axis are no scalars
            if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.board.add_scalar(f"{prefix}/{key}", value, global_step=record["step"])

    def _mirror_followed(self) -> None:
        for entry in self._followed:
            path, done, prefix = entry
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(done)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]   # a line still being written waits for the next call
            for line in complete.decode().splitlines():
                if line:
                    self._add_scalars(prefix, json.loads(line))
            entry[1] = done + len(complete)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.file:
            self.file.close()
        if self.board:
            self._mirror_followed()
            self.board.close()


def open_tensorboard(directory: Path, purge_step: int):
    """A SummaryWriter on `directory` that hides the events of steps >= purge_step written before,
    or None when TensorBoard cannot be imported (a cluster node's own torch without the tensorboard
    package): training goes on with metrics.jsonl, and this says so once, with the reason."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as err:   # ImportError when missing; a broken install (e.g. protobuf) raises others
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"TensorBoard logging is off ({reason}); metrics.jsonl is written as usual. For {directory}/, "
              f"install the tensorboard pinned in requirements.txt", file=sys.stderr)
        return None
    return SummaryWriter(str(directory), purge_step=purge_step)


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
