"""What a target is run with (the command line's options) and where the project's files are."""
from __future__ import annotations

import hashlib
import shlex
import sys
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Callable, Literal, get_args, get_origin, get_type_hints

from repro.cli import UserError
from repro.expected import EXPECTED_DIR, ROOT

CONFIG_DIR = ROOT / "repro" / "configs"
Profile = Literal["paper", "claims", "claims-quick", "claims-all"]   # the claims profiles: claims.py
Probe = Literal["", "full", "cached"]                               # "": the config's eval.probe


def words(text: str | None) -> list[str]:
    """'a, b c' -> ['a', 'b', 'c']: the Makefile's lists, comma or space separated."""
    return [w for w in (text or "").replace(",", " ").split() if w]


def flag(default, help: str, name: str = "", parse: Callable[[str], object] | None = None, path: bool = False,
         bounds: tuple[int, int | None] | None = None):
    """A field that is also a flag of the command line: --<name, default the field's> with this help
    (cli.py builds the parser from these); `parse` reads its text where the field's type alone does
    not say how (from_text); `path`: a path, made absolute when given outside the repository;
    `bounds`: an integer's (lowest, highest or None)."""
    return field(default=default, metadata={"help": help, "flag": name, "parse": parse, "path": path,
                                            "bounds": bounds})


@dataclass(frozen=True)
class Options:
    """What a target runs with. A field made with `flag` is a command-line flag (cli.py builds the
    parser from them) and a Make variable of the same name in capitals."""
    out: Path = flag(Path("runs"), "folder of the run folders; results in OUT/results", path=True)
    data_dir: str = flag("data", "datasets (data.root of every run)", path=True)
    imagenet_dir: str = flag("", "ImageNet image folder (default DATA_DIR/imagenet)", path=True)
    cifar10: str = flag("", "Figure 2's CIFAR-10 (default DATA_DIR; a .tar.gz of the image folder works)", path=True)
    gpus: int = flag(1, "processes per run (torchrun when > 1)", bounds=(1, None))
    methods: tuple[str, ...] = flag((), "rows (config names), comma or space separated; default: all")
    datasets: tuple[str, ...] = flag((), "datasets; default: the experiment's")
    seeds: tuple[int, ...] = flag((0,), "seeds, e.g. '0 1 2' (default 0; the claims profiles: their own)")
    epochs: int | None = flag(None, "override every run's epochs (NOT-COMPARABLE)", bounds=(1, None))
    profile: Profile = flag("paper", "the setting: paper, or the CPU claims profiles (default: the target's first)")
    probe: Probe = flag("", "linear probe (default: the config's)")
    overrides: tuple[str, ...] = flag((), "extra key=value config overrides for every run (NOT-COMPARABLE)",
                                      parse=lambda text: tuple(shlex.split(text)))
    prepare_data: Literal["auto", "none"] = flag(
        "auto", "auto: download missing datasets, write FFCV files when ffcv is installed")
    spectra_every: int = flag(10, "Figure 3: steps between eigenvalue records")
    dry_run: bool = flag(False, "print the commands, run nothing")
    python: str = sys.executable
    nnodes: int = flag(1, "machines per run (torchrun --nnodes); > 1 needs --master-addr", bounds=(1, None))
    node_rank: int = flag(0, "this machine, 0..NNODES-1 (0 evaluates, collects, checks)")
    master_addr: str = flag("", "address of the NODE_RANK=0 machine (NNODES > 1)")
    master_port: int = flag(29500, "a free TCP port on the NODE_RANK=0 machine", bounds=(1, 65535))
    rdzv_timeout: int = flag(600, "seconds the nodes wait for each other (the preflight's meeting, torchrun's rendezvous)",
                             bounds=(1, None))
    # derived files (FFCV); "": <out>/cache (data folders may be read-only)
    cache_dir: str = flag("", "derived files (FFCV); default OUT/cache", path=True)
    # which config of the rows that have both (variants.py)
    config_variant: Literal["paper", "authors"] = flag(
        "paper", "authors: rows with an authors'-code config train it (Table 2's FroSSL row)", name="variant")
    # per-row learning rate ((row, lr), ...; the claims-all sweep): such a row's runs get optim.lr=<lr>
    # and "-lr<lr>" in their folder name (repro/experiments/plan.py run_spec)
    row_lr: tuple[tuple[str, float], ...] = ()
    expected_dir: Path = EXPECTED_DIR   # the expected and recorded references (tests point it at a copy)

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
        """Run-folder suffix that keeps non-paper runs apart: -e<N>, -x<hash>."""
        suffix = ""
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
            (self.suffix if self.variant else "") + \
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


def variable(f: Field) -> str:
    """A flag's Make variable: GPUS for --gpus, VARIANT for config_variant's --variant."""
    return (f.metadata["flag"] or f.name).upper().replace("-", "_")


def choices(f: Field) -> tuple[str, ...]:
    """A Literal field's choices (() for any other type)."""
    kind = get_type_hints(Options)[f.name]
    return get_args(kind) if get_origin(kind) is Literal else ()


def from_text(f: Field, text: str):
    """A flag field's value from its command-line text ("" gives its default): the one place where
    the options' text is read, and where a value outside a Literal's choices, a word that is not
    an integer where one is due, or an integer outside its bounds, is a one-line UserError naming
    the variable and the fix."""
    text = text.strip()
    if not text:
        return f.default
    if f.metadata["parse"]:
        return f.metadata["parse"](text)
    if choices(f):
        if text not in choices(f):
            raise UserError(f"{variable(f)}={text} is not one of its choices: choose "
                            f"{' or '.join(c or 'empty' for c in choices(f))}")
        return text
    kind = get_type_hints(Options)[f.name]
    try:
        if kind == tuple[int, ...]:
            return tuple(int(w) for w in words(text))
        if kind in (int, int | None):
            return within_bounds(f, int(text))
    except ValueError:
        example = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else 1 if f.default is None else f.default
        what = "a list of integers" if isinstance(f.default, tuple) else "an integer"
        raise UserError(f"{variable(f)}={text}: not {what}: give e.g. {variable(f)}={example!s}") from None
    return tuple(words(text)) if kind == tuple[str, ...] else Path(text) if kind is Path else text


def within_bounds(f: Field, n: int) -> int:
    low, high = f.metadata["bounds"] or (None, None)
    if (low is not None and n < low) or (high is not None and n > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        default = f" (default {f.default})" if f.default is not None else ""
        raise UserError(f"{variable(f)}={n} is out of range: give {variable(f)} {allowed}{default}")
    return n
