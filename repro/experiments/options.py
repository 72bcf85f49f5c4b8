"""What a target is run with (the command line's options) and where the project's files are."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "repro" / "configs"
EXPECTED_DIR = ROOT / "expected_results"
# PROFILE values: the paper's budgets, the reduced `short` one, and the CPU claims profile (repro/experiments/claims.py)
PROFILES = ("paper", "short", "claims", "claims-quick", "claims-all")
# VARIANT values: `authors` trains repro/configs/<dataset>/<row>_authors.yaml instead of <row>.yaml
# for the rows that have one (repro/experiments/variants.py AUTHORS_ROWS)
CONFIG_VARIANTS = ("paper", "authors")


def words(text: str | None) -> list[str]:
    """'a, b c' -> ['a', 'b', 'c']: the Makefile's lists, comma or space separated."""
    return [w for w in (text or "").replace(",", " ").split() if w]


@dataclass(frozen=True)
class Options:
    out: Path = Path("runs")
    data_dir: str = "data"
    imagenet_dir: str = ""          # default <data_dir>/imagenet
    cifar10: str = ""               # Figure 2's CIFAR-10 (default data_dir)
    gpus: int = 1
    methods: tuple[str, ...] = ()   # rows (config names); empty: the target's rows
    datasets: tuple[str, ...] = ()  # empty: the target's datasets
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None       # EPOCHS override (NOT-COMPARABLE)
    profile: str = "paper"          # paper | short
    probe: str = ""                 # "" (the config's eval.probe) | full | cached
    overrides: tuple[str, ...] = ()
    prepare_data: str = "auto"      # auto | none
    spectra_every: int = 10         # Figure 3: steps between eigenvalue records
    dry_run: bool = False
    python: str = sys.executable
    nnodes: int = 1                 # machines (torchrun --nnodes); > 1 needs master_addr
    node_rank: int = 0              # this machine (0: it also evaluates, collects and checks)
    master_addr: str = ""           # address of the node_rank 0 machine, reachable from every node
    master_port: int = 29500
    rdzv_timeout: int = 600         # seconds the nodes wait for each other (preflight, torchrun's rendezvous)
    cache_dir: str = ""             # derived files (FFCV); "": <out>/cache (CACHE_DIR; data folders may be read-only)
    config_variant: str = "paper"   # paper | authors (VARIANT): which config of the rows that have both
    # per-row learning rate ((row, lr), ...; the claims-all sweep): such a row's runs get optim.lr=<lr>
    # and "-lr<lr>" in their folder name (repro/experiments/plan.py run_spec)
    row_lr: tuple[tuple[str, float], ...] = ()

    @property
    def world_size(self) -> int:
        """Training processes per run, all machines together (the global batch is split over them)."""
        return self.gpus * self.nnodes

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def variant(self) -> str:
        parts = []
        if self.epochs is not None:
            parts.append(f"EPOCHS={self.epochs}")
        if self.overrides:  # the list itself is in the result file ("overrides")
            parts.append(f"OVERRIDES#{self.overrides_hash}")
        if self.config_variant != "paper":
            parts.append(f"VARIANT={self.config_variant}")
        return ", ".join(parts)

    @property
    def overrides_hash(self) -> str:
        return hashlib.sha1(" ".join(self.overrides).encode()).hexdigest()[:6]

    @property
    def suffix(self) -> str:
        """Run-folder suffix that keeps non-paper runs apart: -short, -e<N>, -x<hash>."""
        suffix = "-short" if self.profile == "short" else ""
        if self.epochs is not None:
            suffix += f"-e{self.epochs}"
        if self.overrides:
            suffix += "-x" + self.overrides_hash
        return suffix

    def result_stem(self, experiment: str) -> str:
        # the run-folder suffix never carries VARIANT (its rows have their own names): the stem does
        # a profile named after the experiment is its own (claims -> claims.json, claims-quick -> claims-quick.json)
        profile = "" if self.profile in ("paper", experiment) else "-" + self.profile.removeprefix(experiment + "-")
        return experiment + profile + \
            (self.suffix.replace("-short", "") if self.variant else "") + \
            (f"-{self.config_variant}" if self.config_variant != "paper" else "")

    @property
    def cache(self) -> str:
        """data.cache_dir of every run: the FFCV files go there, never into DATA_DIR / IMAGENET_DIR."""
        return self.cache_dir or str(self.out / "cache")

    def data_root(self, dataset: str) -> str:
        """data.root of a run on this dataset: ImageNet has its own folder."""
        if dataset == "imagenet":
            return self.imagenet_dir or str(Path(self.data_dir) / "imagenet")
        return self.data_dir
