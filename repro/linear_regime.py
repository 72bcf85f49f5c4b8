"""Figure 2: stepwise learning in the linear regime, eq. 8 (FroSSL variant) vs the Barlow variant.

    python -m repro.linear_regime --data DATA_DIR --out runs/figure2          # CPU only; timing: docs/measurements.md
    make figure2 DATA_DIR=data

Paper section 5.1: two linear layers, one per view, trained by full-batch gradient descent on 1024
CIFAR-10 samples; the top-10 eigenvalues of Z1^T Z1 plotted against t = lr * step. Claim: eq. 8
saturates earlier than Simon et al.'s (2023) ||Z1^T Z2 - I||_F^2. The appendix with the setup is
unavailable; the choices (`Settings`; docs/experiments.md, the figures): two random 20x20 crops
per image as the views, small initial weights, lr 0.5 in float64, both losses with Z^T Z / N.
Saturated (`repro.spectra.saturation_index`): an eigenvalue from the first record after which it
stays within a factor `band` = 0.5 of its final value; the top-10 spectrum when its last one is;
a run not flat to 10% over its last 25% never saturates. Verdict: PASS if eq. 8's top-10 spectrum
saturates strictly earlier. Outputs in --out: figure2.json (curves, saturation times, verdict),
figure2.png; the measured times: docs/measurements.md.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import pickle
import re
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from repro.cli import UserError, run_cli
from repro.losses.frossl import barlow_linear_regime_loss, linear_regime_loss
from repro.spectra import saturation_index

VARIANTS = {
    "eq8": ("FroSSL linear variant, eq. 8", linear_regime_loss),
    "barlow": ("Barlow Twins variant ||Z1^T Z2 - I||^2", barlow_linear_regime_loss),
}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Settings:
    num_images: int = 1024     # the paper's sample size
    crop: int = 20             # crop side in pixels: m = crop * crop * 3 input features
    dim: int = 10              # output dimensions d (eigenvalues tracked: all of them)
    init_scale: float = 1e-3   # std of the initial weights (small init: stepwise regime)
    lr: float = 0.5            # full-batch gradient descent step size (1.0 makes lambda_1 of eq. 8 oscillate)
    t_max: float = 2500.0      # effective time lr * step at the end (both variants flat well before)
    record_every: int = 10     # steps between records of loss and eigenvalues
    band: float = 0.5          # saturated: within this factor of the final value from then on
    plateau_window: float = 0.25  # last fraction of the run that must be flat for a valid "final value"
    plateau_tolerance: float = 0.1  # relative change allowed over that window
    seed: int = 0

    @property
    def steps(self) -> int:
        return int(round(self.t_max / self.lr))


# ---- data -------------------------------------------------------------------------------------

def _sample(count: int, n: int, seed: int) -> np.ndarray:
    if count < n:
        raise UserError(f"CIFAR-10 training split has {count} images, fewer than the {n} needed")
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False))


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def load_cifar10_train(path: str | Path, n: int, seed: int = 0, download: bool = False) -> np.ndarray:
    """n CIFAR-10 training images, uint8 (n, 32, 32, 3), a seeded random sample of the split.

    Accepted at `path`: torchvision's files (`path/cifar-10-batches-py/data_batch_*`, or that
    folder itself), an image folder (`path/train/<class>/*.png|jpg`), or a .tar.gz of such an
    image folder (e.g. a cifar10-jpeg.tar.gz). With download=True and nothing found,
    torchvision downloads the dataset into `path`."""
    path = Path(path)
    batches = next((p for p in (path / "cifar-10-batches-py", path) if (p / "data_batch_1").is_file()), None)
    if batches is not None:
        images = []
        for i in range(1, 6):
            with open(batches / f"data_batch_{i}", "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        images = np.concatenate(images)
        return images[_sample(len(images), n, seed)]
    if path.is_dir() and (path / "train").is_dir():
        files = sorted(p for p in (path / "train").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return np.stack([_decode(files[i].read_bytes()) for i in _sample(len(files), n, seed)])
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        pattern = re.compile(r"(?:^|/)train/[^/]+/[^/]+\.(?:png|jpe?g|bmp)$", re.IGNORECASE)
        members = {}
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and pattern.search(member.name):
                    members[member.name] = tar.extractfile(member).read()
        names = sorted(members)
        return np.stack([_decode(members[names[i]]) for i in _sample(len(names), n, seed)])
    if download:
        import torchvision
        torchvision.datasets.CIFAR10(str(path), train=True, download=True)
        return load_cifar10_train(path, n, seed, download=False)
    raise UserError(f"no CIFAR-10 training images at '{path}': give a folder holding cifar-10-batches-py "
                    f"(torchvision's files), an image folder with train/<class>/ images, or a .tar.gz of one")


def two_view_inputs(images: np.ndarray, crop: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random crops per image, flattened, centred and scaled to E||x||^2 = 1."""
    rng = np.random.default_rng(seed)
    n, height, width, _ = images.shape
    views = []
    for _ in range(2):
        top = rng.integers(0, height - crop + 1, size=n)
        left = rng.integers(0, width - crop + 1, size=n)
        crops = np.stack([images[i, top[i]:top[i] + crop, left[i]:left[i] + crop] for i in range(n)])
        views.append(torch.from_numpy(crops.reshape(n, -1).astype(np.float64) / 255.0))
    mean = torch.cat(views).mean(dim=0)
    views = [v - mean for v in views]
    scale = torch.cat(views).pow(2).sum(dim=1).mean().sqrt()
    return views[0] / scale, views[1] / scale


# ---- training ---------------------------------------------------------------------------------

def train_linear(x1: torch.Tensor, x2: torch.Tensor, loss_fn, settings: Settings) -> dict:
    """Full-batch gradient descent on two linear maps z = x w; the loss and the eigenvalues of
    Z1^T Z1 / N (descending) every `record_every` steps, against t = lr * step.

    Run in the outputs' space: the step w <- w - lr x^T dL/dz moves z = x w to
    z - lr (x x^T) dL/dz, so with the Gram matrix x x^T (N x N) computed once, each step is one
    N x N by N x d product per view instead of two N x m by m x d ones, and the m-dimensional
    weights are never formed again (the same iterates in exact arithmetic; tests/test_linear_regime.py
    checks them against the weight-space steps)."""
    generator = torch.Generator().manual_seed(settings.seed)
    m, n = x1.shape[1], x1.shape[0]
    # the same initial weights for every variant (same generator seed)
    w1 = torch.randn(m, settings.dim, generator=generator, dtype=torch.float64) * settings.init_scale
    w2 = torch.randn(m, settings.dim, generator=generator, dtype=torch.float64) * settings.init_scale
    z1, z2 = x1 @ w1, x2 @ w2
    gram1, gram2 = x1 @ x1.T, x2 @ x2.T
    times, losses, eigenvalues = [], [], []
    for step in range(settings.steps + 1):
        z1.requires_grad_(True)
        z2.requires_grad_(True)
        loss, _ = loss_fn(z1, z2)
        if step % settings.record_every == 0 or step == settings.steps:
            with torch.no_grad():
                spectrum = torch.linalg.eigvalsh(z1.T @ z1 / n).flip(0)
            times.append(step * settings.lr)
            losses.append(loss.item())
            eigenvalues.append(spectrum.tolist())
        if step == settings.steps:
            break
        g1, g2 = torch.autograd.grad(loss, (z1, z2))
        with torch.no_grad():
            z1 = z1 - settings.lr * (gram1 @ g1)
            z2 = z2 - settings.lr * (gram2 @ g2)
    return {"t": times, "loss": losses, "eigenvalues": eigenvalues}


def on_plateau(series: np.ndarray, settings: Settings) -> bool:
    """True when every column moved by at most plateau_tolerance (relative) over the last window."""
    start = int(len(series) * (1 - settings.plateau_window))
    window = series[start:]
    final = np.abs(series[-1]) + 1e-300
    return bool((np.abs(window - series[-1]).max(axis=0) / final <= settings.plateau_tolerance).all())


def saturation(curves: dict, settings: Settings) -> dict:
    """Saturation time (t) of each eigenvalue and of the whole top-d spectrum (the latest one)."""
    eig = np.asarray(curves["eigenvalues"])
    times = np.asarray(curves["t"])
    plateau = on_plateau(eig, settings)
    per_eigenvalue = []
    for i in range(eig.shape[1]):
        index = saturation_index(eig[:, i], band=settings.band)
        per_eigenvalue.append(float(times[index]) if plateau and index is not None else math.inf)
    top = max(per_eigenvalue)
    return {"plateau": plateau, "saturation_t": per_eigenvalue, "saturation_t_top": top,
            "saturation_step_top": top / settings.lr if math.isfinite(top) else math.inf,
            "final_eigenvalues": eig[-1].tolist(), "final_loss": curves["loss"][-1]}


def verdict(summary: dict) -> dict:
    eq8, barlow = summary["eq8"]["saturation_t_top"], summary["barlow"]["saturation_t_top"]
    if not math.isfinite(eq8):
        status, why = "FAIL", "eq. 8's top-10 eigenvalues did not saturate by t_max"
    elif eq8 < barlow:
        status = "PASS"
        why = (f"eq. 8 saturates at t = {eq8:g}, the Barlow variant "
               + (f"at t = {barlow:g} ({barlow / eq8:.1f}x later)" if math.isfinite(barlow) else "not by t_max"))
    else:
        status, why = "FAIL", f"eq. 8 saturates at t = {eq8:g}, not before the Barlow variant (t = {barlow:g})"
    return {"claim": "eq. 8's top-10 eigenvalues saturate in fewer steps than the Barlow variant's",
            "status": status, "detail": why}


def run(data: str | Path, out: str | Path, settings: Settings = Settings(), *, download: bool = False,
        plot: bool = True) -> dict:
    start = time.perf_counter()
    torch.set_default_dtype(torch.float64)
    try:
        images = load_cifar10_train(data, settings.num_images, settings.seed, download=download)
        x1, x2 = two_view_inputs(images, settings.crop, settings.seed)
        curves = {name: train_linear(x1, x2, fn, settings) for name, (_, fn) in VARIANTS.items()}
    finally:
        torch.set_default_dtype(torch.float32)
    summary = {name: saturation(c, settings) for name, c in curves.items()}
    result = {"experiment": "figure2", "data": str(data), "settings": asdict(settings),
              "definition_saturated": (f"an eigenvalue is saturated from the first recorded t after which it "
                                       f"stays within a factor {settings.band} of its final value; the top-"
                                       f"{settings.dim} spectrum saturates when its last eigenvalue does; a run "
                                       f"not flat to {settings.plateau_tolerance:.0%} over its last "
                                       f"{settings.plateau_window:.0%} counts as not saturated"),
              "summary": summary, "verdict": verdict(summary), "curves": curves,
              "seconds": round(time.perf_counter() - start, 1)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if plot:
        plot_figure2(result, out / "figure2.png")
    # last and atomic: `make figure2` counts an existing figure2.json as done, so it must be whole
    from repro.atomic import atomic_write_text
    atomic_write_text(out / "figure2.json", json.dumps(result, indent=1, default=_json_default) + "\n")
    return result


def _json_default(value):
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def plot_figure2(result: dict, path: Path) -> None:
    """Two columns (eq. 8, Barlow variant); top row the loss, bottom row the eigenvalues, both
    against t = lr * step on a log y axis; a dashed line where the top-d spectrum saturates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for col, (name, (title, _)) in enumerate(VARIANTS.items()):
        curves, summary = result["curves"][name], result["summary"][name]
        axes[0, col].plot(curves["t"], curves["loss"], color="black")
        axes[0, col].set_yscale("log")
        axes[0, col].set_title(title, fontsize=10)
        axes[1, col].plot(curves["t"], np.asarray(curves["eigenvalues"]))
        axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("t = lr x step")
        t_sat = summary["saturation_t_top"]
        if t_sat is not None and math.isfinite(t_sat):
            for ax in axes[:, col]:
                ax.axvline(t_sat, color="grey", linestyle="--", linewidth=1)
            axes[1, col].text(t_sat, axes[1, col].get_ylim()[0], f" saturated t={t_sat:g}", fontsize=8,
                              va="bottom")
    axes[0, 0].set_ylabel("loss")
    axes[1, 0].set_ylabel("eigenvalues of Z1^T Z1 / N")
    fig.suptitle(f"Figure 2 (reproduced): linear maps, full-batch GD, "
                 f"{result['settings']['num_images']} CIFAR-10 images — {result['verdict']['status']}", fontsize=10)
    fig.tight_layout()
    from repro.atomic import atomic_write_bytes
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str]) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m repro.linear_regime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="CIFAR-10: folder with cifar-10-batches-py, image folder with train/, or its .tar.gz")
    parser.add_argument("--out", required=True, help="output folder (figure2.json, figure2.png)")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision if absent")
    for key, value in asdict(defaults).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                            help=f"default {value}")
    args = parser.parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in asdict(defaults)})
    result = run(args.data, args.out, settings, download=args.download)
    for name, (title, _) in VARIANTS.items():
        s = result["summary"][name]
        print(f"{title}: top-{settings.dim} saturated at t = {s['saturation_t_top']:g} "
              f"(final loss {s['final_loss']:.3g}, plateau {s['plateau']})", file=sys.stderr)
    print(f"figure 2: {result['verdict']['status']} — {result['verdict']['detail']} "
          f"({result['seconds']} s) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
