"""The reproduced figures drawn from a collected result's content (its "cells" and "curves"), as
PNG files written atomically. Called by `repro.experiments` when it collects Figures 3 and 4."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # headless: no display on the training machines
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    from repro.atomic import atomic_write_bytes
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    _pyplot().close(fig)
    return path


def plot_figure3(content: dict, path: Path) -> Path:
    """One panel per row: the tracked eigenvalues (log scale) against the step, the saturation step
    of the last one dashed; the title has the row's condition number and entropy cells."""
    import numpy as np

    plt = _pyplot()
    curves = content["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(max(6, 4 * len(curves)), 3.8), squeeze=False, sharey=True)
    for ax, (row, curve) in zip(axes[0], curves.items()):
        ax.plot(curve["step"], np.asarray(curve["eigenvalues"]), linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        cells = content["cells"]
        cond = cells.get(f"condition_number/{row}", {}).get("value")
        entropy = cells.get(f"entropy/{row}", {}).get("value")
        ax.set_title(f"{row}\ncond {float(cond):.3g}, entropy {float(entropy):.3f}", fontsize=9)
        if curve.get("saturation_step") is not None:
            ax.axvline(curve["saturation_step"], color="grey", linestyle="--", linewidth=1)
    axes[0][0].set_ylabel("top-14 eigenvalues of view-1 covariance")
    fig.suptitle("Figure 3 (reproduced): dashed line = saturation of lambda_14", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_figure4(content: dict, path: Path, *, window: int) -> Path:
    """Online top-1 and top-5 (%) per epoch of each row, over the first `window` epochs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for row, curve in content["curves"].items():
        axes[0].plot(curve["epoch"], curve["top1"], marker=".", label=row)
        axes[1].plot(curve["epoch"], curve["top5"], marker=".", label=row)
    for ax, name in zip(axes, ("top-1", "top-5")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"online {name} (%)")
        ax.legend()
    fig.suptitle(f"Figure 4 (reproduced): ImageNet ResNet18, first {window} epochs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
