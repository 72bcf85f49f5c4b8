"""Eigen-dynamics of the embedding covariance (Figure 3), usable in any training run.

    python -m repro.train CONFIG train.spectra_every=10     # -> <run>/spectra.jsonl
    python -m repro.spectra RUN_DIR [RUN_DIR ...]           # end-of-run metrics of each run

Paper section 5.2 ("Z1^T Z1" read as the covariance of the view-1 embeddings): the top k = 14
eigenvalues of C = Zc^T Zc / N, Zc the batch-centred (N, D) view-1 projector outputs (float64);
condition number lambda_1 / lambda_14 (ideal 1); Shannon entropy (nats) of the top 14 normalised to
sum 1 (at most ln 14 = 2.639). Saturation step of lambda_k: the first record after which its
trailing `smooth`-record mean stays within a factor `band` of its final value (`saturation_index`).
Figure 3 uses band 0.5 (a factor 2 on the paper's log axis) and smooth 5 (FIGURE3_BAND,
FIGURE3_SMOOTH); Figure 2 uses band 0.5 and smooth 1 (repro/linear_regime.py: full-batch gradient
descent has no minibatch noise). The claims profiles use a settling step instead (`settling_index`).
`SpectraTracker` records the spectra during training; the choices: docs/experiments.md (the figures).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

TOP_K = 14          # eigenvalues tracked (the paper's Figure 3)
SPECTRA_FILE = "spectra.jsonl"
FIGURE3_BAND = 0.5
FIGURE3_SMOOTH = 5
SETTLE_FRACTION = 0.2


# ---- metric functions: pure, on arrays -----------------------------------------------------------

def covariance_eigenvalues(z: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Top-k eigenvalues (descending, float64) of the covariance Zc^T Zc / N of an (N, D) batch."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"expected an (N, D) batch with N >= 2, got shape {tuple(z.shape)}")
    z = z.detach().to(torch.float64)
    z = z - z.mean(dim=0, keepdim=True)
    n, d = z.shape
    gram = z.T @ z / n if d <= n else z @ z.T / n
    eigenvalues = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0)  # rounding can give -1e-17
    return eigenvalues[:k]


def condition_number(eigenvalues, k: int = TOP_K) -> float:
    """lambda_1 / lambda_k of a descending spectrum (inf when lambda_k = 0)."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    if len(values) < k:
        raise ValueError(f"need {k} eigenvalues, got {len(values)}")
    return float(values[0] / values[k - 1]) if values[k - 1] > 0 else math.inf


def spectral_entropy(eigenvalues, k: int = TOP_K) -> float:
    """Shannon entropy (nats) of the top-k eigenvalues normalised to sum 1."""
    values = np.asarray(eigenvalues, dtype=np.float64)[:k]
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def moving_average(series, window: int) -> np.ndarray:
    """Trailing moving average (the first records average over what exists so far)."""
    x = np.asarray(series, dtype=np.float64)
    if window <= 1:
        return x
    cumulative = np.cumsum(np.insert(x, 0, 0.0))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(x) + 1) - counts]) / counts


def saturation_index(series, *, band: float, smooth: int = 1) -> int | None:
    """Index of the first record from which the (smoothed) series stays within a factor `band`
    of its final value (band * final <= x <= final / band for every later record); None when the
    final value is not positive and finite. The final value is the one at the end of the tracked
    run (the end of epoch 5 for Figure 3)."""
    if not 0 < band <= 1:
        raise ValueError(f"band must be in (0, 1], got {band}")
    x = moving_average(series, smooth)
    if len(x) == 0:
        return None
    final = x[-1]
    if not (np.isfinite(final) and final > 0):
        return None
    inside = (x >= band * final) & (x <= final / band)
    outside = np.flatnonzero(~inside)
    return int(outside[-1] + 1) if len(outside) else 0


def settling_index(series, *, fraction: float = SETTLE_FRACTION, smooth: int = FIGURE3_SMOOTH) -> int | None:
    """Index of the first record from which the smoothed log series stays within `fraction` of its
    range of its final value (0 for a constant series); None when a value is not positive and finite.

    The claims profiles' saturation (docs/claims.md): with a fixed band a short run whose lambda_k
    never moves by a factor 2 is "saturated" at step 0 whatever it does. Here the band is a fraction
    of the range the smoothed log lambda_k covers during the run: |log x - log final| <= fraction x
    (max log x - min log x). Some record is at least half the range from the final value, so the
    index is 0 only for a constant series."""
    x = moving_average(series, smooth)
    if len(x) == 0 or not (np.all(np.isfinite(x)) and np.all(x > 0)):
        return None
    logs = np.log(x)
    spread = logs.max() - logs.min()
    outside = np.flatnonzero(np.abs(logs - logs[-1]) > fraction * spread)
    return int(outside[-1] + 1) if len(outside) else 0


# ---- tracking inside a training run --------------------------------------------------------------

class SpectraTracker:
    """Records the top-k covariance eigenvalues of view-1 embeddings every `every` optimizer steps.

    A forward hook on the method's `projector` module (the backbone if a method has none) keeps the
    output of its FIRST call in a training step, i.e. view 1's embeddings (every method runs view 1
    through it first), detached, on the steps that are recorded. The record of step s holds the
    embeddings of the forward pass that produced update s + 1 (step 0 = the initial weights). With
    several GPUs the spectrum is that of rank 0's share of the batch. Lines of `<run>/spectra.jsonl`:
    {"step", "epoch", "eigenvalues" (top k, descending), "condition_number", "entropy", "source"}.

        tracker = SpectraTracker(method, run_dir, every=10, start_step=step, steps_per_epoch=n)
        ... after each optimizer step: tracker.after_step(step)
        tracker.close()
    """

    def __init__(self, method: nn.Module, run_dir: Path, *, every: int, start_step: int = 0,
                 steps_per_epoch: int = 0, k: int = TOP_K):
        if every <= 0:
            raise ValueError(f"every must be > 0, got {every}")
        self.every, self.k, self.steps_per_epoch = every, k, steps_per_epoch
        self.steps_done = start_step
        module = getattr(method, "projector", None)
        self.source = "projector" if isinstance(module, nn.Module) else "backbone"
        module = module if isinstance(module, nn.Module) else method.backbone
        self._captured: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)
        self.path = Path(run_dir) / SPECTRA_FILE
        _trim(self.path, start_step)
        self._file = open(self.path, "a")

    def _hook(self, module, inputs, output) -> None:
        if self._captured is None and self.steps_done % self.every == 0 and module.training:
            self._captured = output.detach()

    def after_step(self, step: int) -> None:
        """Call after optimizer step number `step` (1-based: the count of steps done)."""
        captured, self._captured = self._captured, None
        recorded_step = self.steps_done
        self.steps_done = step
        if captured is None:
            return
        try:
            eigenvalues = covariance_eigenvalues(captured, self.k) if torch.isfinite(captured).all() else None
        except torch.linalg.LinAlgError:   # embeddings of ~1e16 and more: a diverging run's
            eigenvalues = None
        if eigenvalues is None:
            # no record: the run is diverging, and the trainer's check of the loss at its next log step
            # stops it with its own message (and diverged.json for a sweep) rather than this step's error
            print(f"spectra: no record at step {recorded_step}: the embeddings are not finite or too large for "
                  f"an eigendecomposition", file=sys.stderr, flush=True)
            return
        values = eigenvalues.tolist()
        condition = condition_number(values, self.k) if len(values) >= self.k else math.inf
        record = {"step": recorded_step,
                  "epoch": recorded_step / self.steps_per_epoch if self.steps_per_epoch else None,
                  "eigenvalues": values,
                  "condition_number": condition if math.isfinite(condition) else None,  # JSON has no inf
                  "entropy": spectral_entropy(values, self.k), "source": self.source}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._handle.remove()
        self._file.close()


def _trim(path: Path, step: int) -> None:
    """On resume, drop records of steps at or after the checkpoint's (they will be recorded again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] < step]
    path.write_text("".join(line + "\n" for line in kept))


# ---- reading a run back ---------------------------------------------------------------------------

def read_spectra(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / SPECTRA_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(records: list[dict], *, k: int = TOP_K, band: float = FIGURE3_BAND,
              smooth: int = FIGURE3_SMOOTH) -> dict | None:
    """End-of-run metrics of a spectra.jsonl: condition number and entropy of the last record,
    saturation step of lambda_k. None if nothing usable was recorded."""
    records = [r for r in records if len(r["eigenvalues"]) >= k]
    if not records:
        return None
    last = records[-1]["eigenvalues"]
    steps = [r["step"] for r in records]
    smallest = [r["eigenvalues"][k - 1] for r in records]
    index = saturation_index(smallest, band=band, smooth=smooth)
    settled = settling_index(smallest, smooth=smooth)
    return {"final_step": steps[-1], "final_epoch": records[-1].get("epoch"),
            "condition_number": condition_number(last, k), "entropy": spectral_entropy(last, k),
            "saturation_step": steps[index] if index is not None else None,
            "settling_step": steps[settled] if settled is not None else None,
            "final_eigenvalues": last, "records": len(records), "band": band, "smooth": smooth, "k": k}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.spectra", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders trained with train.spectra_every > 0")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        summary = summarize(read_spectra(Path(run_dir)))
        if summary is None:
            print(f"{run_dir}: no {SPECTRA_FILE} with {TOP_K} eigenvalues", file=sys.stderr)
            continue
        print(f"{run_dir}: condition number {summary['condition_number']:.3g}, entropy "
              f"{summary['entropy']:.4f}, lambda_{TOP_K} saturated at step {summary['saturation_step']} "
              f"(of {summary['final_step']})")
    return 0


if __name__ == "__main__":
    from repro.cli import run_cli
    run_cli(main)
