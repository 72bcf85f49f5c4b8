"""Every paper experiment end to end: prepare data, train what is missing, resume what is
unfinished, skip what is done, evaluate, write results, check them against the paper.

    python -m repro.experiments table2 [--dry-run] [--gpus 4] [--methods frossl,vicreg] ...
    make table2                      # the same, with the Makefile's variables
    make -n table2                   # prints the commands it would run, runs nothing

Targets (expected values and claims in expected_results/<target>.yaml):
  figure2   linear regime, eq. 8 vs the Barlow variant (CPU, about a minute)       repro/linear_regime.py
  table2    linear probe top-1, 12 rows x CIFAR-10 / CIFAR-100 (1000 ep.) / STL-10 (500 ep.)
  table3    STL-10 online top-1 at epochs 3-100: the STL-10 runs of Table 2, stopped (SIGTERM, a
            clean checkpoint) once epoch 100 is validated; `table2` later resumes them to 500
  ablation  the FroSSL (no logs) rows of Tables 2 and 3, with the FroSSL rows to compare
  figure3   5 STL-10 epochs of FroSSL, VICReg, Barlow Twins, SimCLR with eigenvalue tracking
  figure4   ImageNet, FroSSL vs Barlow Twins, 100 epochs, online top-1/top-5 per epoch, probe
  all       all of the above, then the full check and the report
Sub-commands: `collect TARGET` (results from the run folders, no training), `record TARGET
--profile short` (store measured short-profile values as the reference), `download DATASET`.

A run is named <dataset>-<row>-seed<S>[suffix] under --out (figure runs: figure3-stl10-..., the
ImageNet ones imagenet-...), where a row is a config name (repro/configs/<dataset>/<row>.yaml).
A row whose config is not written yet, or whose method is not registered in repro.methods, is
reported MISSING and skipped: the targets grow with the configs. Suffixes keep non-paper runs
apart: -short (PROFILE=short), -e<N> (EPOCHS=N), -x<hash> (OVERRIDES=...). Any of those makes the
cells NOT-COMPARABLE to the paper (PROFILE=short cells compare with measured short references).
With --gpus N > 1 training is launched as `torchrun --standalone --nproc_per_node=N -m repro.train`
(the global batch, e.g. Figure 4's 224, is split over the N processes). With --nnodes M > 1 the same
command runs on every machine (--node-rank 0..M-1, --master-addr of node 0): `torchrun --nnodes=M
--node_rank=R --master_addr=A --master_port=P --nproc_per_node=N`, the batch split over M x N
processes; node 0 evaluates, collects and checks, the other nodes only train (--out must be shared).
Before anything runs, every planned run's config is loaded with its overrides (a bad key or value is
a one-line error), its batch must divide by the number of processes, and (CUDA present, not in
--dry-run) --gpus must not exceed the visible devices; without CUDA, --gpus N runs N CPU processes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import yaml

from repro.cli import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "repro" / "configs"
EXPECTED_DIR = ROOT / "expected_results"

TABLE_ROWS = ["simclr", "swav", "mocov2plus", "simsiam", "byol", "dino", "vicreg", "barlow_twins", "wmse",
              "corinfomax", "frossl_nologs", "frossl"]
TABLE2_DATASETS = ["cifar10", "cifar100", "stl10"]
TABLE3_ROWS = [r for r in TABLE_ROWS if r != "corinfomax"]   # no CorInfoMax row in Table 3
TABLE3_EPOCHS = [3, 10, 30, 50, 100]
ABLATION_ROWS = ["frossl_nologs", "frossl"]
FIGURE3_ROWS = ["frossl", "vicreg", "barlow_twins", "simclr"]
FIGURE4_ROWS = ["frossl", "barlow_twins"]
FIGURE4_EPOCHS = 30      # the figure's window of per-epoch curves
TARGETS = ["figure2", "table2", "table3", "ablation", "figure3", "figure4", "all"]

# Figure 3 (paper 5.2: ResNet18, STL-10, lr 0.1, batch 256, 5 epochs; optimizer in the unavailable
# appendix B.1): SGD with momentum 0.9 at a constant lr 0.1 (min_lr = lr: the cosine is flat).
FIGURE3_OVERRIDES = ["optim.name=sgd", "optim.lr=0.1", "optim.min_lr=0.1", "optim.warmup_epochs=0",
                     "optim.epochs=5", "data.batch_size=256", "eval.online_eval_every=0"]
# Config keys that do not change what a run measures (the rest must equal the paper's config).
NON_SEMANTIC = ("name", "out_dir", "seed", "device", "data.root", "data.num_workers", "data.download",
                "data.loader", "train.log_every", "train.compile", "eval.online_eval_every", "eval.probe")


# ---- options and run specs ------------------------------------------------------------------------

def _words(text: str | None) -> list[str]:
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
        return ", ".join(parts)

    @property
    def overrides_hash(self) -> str:
        return hashlib.sha1(" ".join(self.overrides).encode()).hexdigest()[:6]

    @property
    def suffix(self) -> str:
        suffix = "-short" if self.profile == "short" else ""
        if self.epochs is not None:
            suffix += f"-e{self.epochs}"
        if self.overrides:
            suffix += "-x" + self.overrides_hash
        return suffix

    def result_stem(self, experiment: str) -> str:
        return experiment + ("-short" if self.profile == "short" else "") + \
            (self.suffix.replace("-short", "") if self.variant else "")


@dataclass
class RunSpec:
    experiment: str                  # table (table2/table3 share runs), figure3, figure4
    row: str
    dataset: str
    seed: int
    config: Path
    name: str
    standard: list[str]              # overrides that define this run (profile, EPOCHS included)
    reference: list[str]             # the overrides of the setting it is compared with: the paper's,
                                     # or the short profile's (never EPOCHS or user overrides)
    user: list[str] = field(default_factory=list)
    evaluate: bool = True
    stop_at_epoch: int | None = None

    def run_dir(self, opts: Options) -> Path:
        return opts.out / self.name

    def overrides(self, opts: Options) -> list[str]:
        data_root = ((opts.imagenet_dir or str(Path(opts.data_dir) / "imagenet")) if self.dataset == "imagenet"
                     else opts.data_dir)
        return [f"name={self.name}", f"out_dir={opts.out}", f"data.root={data_root}", f"seed={self.seed}",
                *self.standard, *self.user]


def config_path(dataset: str, row: str) -> Path:
    return CONFIG_DIR / dataset / f"{row}.yaml"


def profile_epochs(experiment: str, dataset: str, profile: str) -> int | None:
    if profile == "paper":
        return None
    spec = yaml.safe_load((EXPECTED_DIR / f"{experiment}.yaml").read_text())
    prof = (spec.get("profiles") or {}).get(profile)
    if prof is None:
        raise UserError(f"PROFILE={profile}: {experiment} has no such profile (expected_results/{experiment}.yaml)")
    return (prof.get("epochs") or {}).get(dataset)


def profile_datasets(experiment: str, profile: str) -> list[str] | None:
    if profile == "paper":
        return None
    spec = yaml.safe_load((EXPECTED_DIR / f"{experiment}.yaml").read_text())
    return list(((spec.get("profiles") or {}).get(profile) or {}).get("datasets", []))


def _pick(requested: tuple[str, ...], allowed: list[str], what: str) -> list[str]:
    if not requested:
        return list(allowed)
    unknown = [r for r in requested if r not in allowed]
    if unknown:
        raise UserError(f"{what} {', '.join(unknown)} not in this experiment (choose from {', '.join(allowed)})")
    return [r for r in allowed if r in requested]


def table_specs(opts: Options, rows: list[str], datasets: list[str], *, stop_table3: bool = False) -> list[RunSpec]:
    """The runs of Tables 2/3 (shared: Table 3 reads the STL-10 runs' online validations)."""
    specs = []
    for dataset in datasets:
        for row in rows:
            for seed in opts.seeds:
                reference = ["eval.online_eval_every=1"] if dataset == "stl10" else []  # Table 3: every epoch
                # a profile's epochs for this dataset (Table 2's short profile: CIFAR-10, Table 3's: STL-10)
                epochs = profile_epochs("table2", dataset, opts.profile) or profile_epochs("table3", dataset,
                                                                                           opts.profile)
                if epochs is not None:
                    reference.append(f"optim.epochs={epochs}")
                standard = list(reference)
                if opts.epochs is not None:
                    standard.append(f"optim.epochs={opts.epochs}")
                stop = None
                if stop_table3 and dataset == "stl10":
                    stop = max(TABLE3_EPOCHS) if opts.epochs is None else None
                specs.append(RunSpec("table", row, dataset, seed, config_path(dataset, row),
                                     f"{dataset}-{row}-seed{seed}{opts.suffix}", standard, reference,
                                     list(opts.overrides), evaluate=not stop_table3, stop_at_epoch=stop))
    return specs


def figure3_specs(opts: Options, rows: list[str]) -> list[RunSpec]:
    reference = FIGURE3_OVERRIDES + [f"train.spectra_every={opts.spectra_every}"]
    standard = list(reference) + ([f"optim.epochs={opts.epochs}"] if opts.epochs is not None else [])
    return [RunSpec("figure3", row, "stl10", seed, config_path("stl10", row),
                    f"figure3-stl10-{row}-seed{seed}{opts.suffix}", standard, reference, list(opts.overrides),
                    evaluate=False) for row in rows for seed in opts.seeds]


def figure4_specs(opts: Options, rows: list[str]) -> list[RunSpec]:
    reference = ["eval.online_eval_every=1"]
    epochs = profile_epochs("figure4", "imagenet", opts.profile)
    if epochs is not None:
        reference.append(f"optim.epochs={epochs}")
    standard = list(reference)
    if opts.epochs is not None:
        standard.append(f"optim.epochs={opts.epochs}")
    return [RunSpec("figure4", row, "imagenet", seed, config_path("imagenet", row),
                    f"imagenet-{row}-seed{seed}{opts.suffix}", standard, reference, list(opts.overrides))
            for row in rows for seed in opts.seeds]


def specs_for(target: str, opts: Options) -> list[RunSpec]:
    if target == "table2":
        datasets = _pick(opts.datasets, profile_datasets("table2", opts.profile) or TABLE2_DATASETS, "DATASETS")
        return table_specs(opts, _pick(opts.methods, TABLE_ROWS, "METHODS"), datasets)
    if target == "table3":
        _pick(opts.datasets, ["stl10"], "DATASETS")
        return table_specs(opts, _pick(opts.methods, TABLE3_ROWS, "METHODS"), ["stl10"], stop_table3=True)
    if target == "ablation":
        datasets = _pick(opts.datasets, profile_datasets("table2", opts.profile) or TABLE2_DATASETS, "DATASETS")
        return table_specs(opts, _pick(opts.methods, ABLATION_ROWS, "METHODS"), datasets)
    if target == "figure3":
        return figure3_specs(opts, _pick(opts.methods, FIGURE3_ROWS, "METHODS"))
    if target == "figure4":
        return figure4_specs(opts, _pick(opts.methods, FIGURE4_ROWS, "METHODS"))
    return []


# ---- run state (read from the run folder; no torch needed) ------------------------------------------

def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a crash: the trainer trims it on resume
    return out


def online_by_epoch(run_dir: Path) -> dict[int, dict]:
    return {int(r["epoch"]): r for r in read_metrics(run_dir) if "online_top1" in r}


def registered_methods() -> set[str] | None:
    try:
        from repro.methods import METHODS
    except Exception:  # noqa: BLE001 - the planner must work even if the package is half-written
        return None
    return set(METHODS)


def missing_reason(spec: RunSpec, methods: set[str] | None) -> str:
    if not spec.config.exists():
        return f"config {spec.config.relative_to(ROOT)} not written yet"
    method = read_yaml(spec.config).get("method")
    if methods is not None and method not in methods:
        return f"method '{method}' not registered in repro/methods.py yet"
    return ""


def planned_epochs(spec: RunSpec, opts: Options) -> int:
    epochs = read_yaml(spec.config).get("optim", {}).get("epochs", 1000)
    for item in spec.overrides(opts):
        if item.startswith("optim.epochs="):
            epochs = int(item.split("=", 1)[1])
    return epochs


def train_state(spec: RunSpec, opts: Options) -> str:
    """new | resume | stopped (Table 3 has what it needs) | done"""
    run_dir = spec.run_dir(opts)
    pretrain = run_dir / "pretrain.json"
    if pretrain.exists() and json.loads(pretrain.read_text()).get("epochs") == planned_epochs(spec, opts):
        return "done"
    if spec.stop_at_epoch and max(online_by_epoch(run_dir), default=0) >= spec.stop_at_epoch:
        return "stopped"
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def probe_kind(spec: RunSpec, opts: Options) -> str:
    return opts.probe or read_yaml(spec.config).get("eval", {}).get("probe", "full")


def eval_state(spec: RunSpec, opts: Options) -> str:
    path = spec.run_dir(opts) / f"eval_{probe_kind(spec, opts)}.json"
    if path.exists() and json.loads(path.read_text()).get("checkpoint_epoch") == planned_epochs(spec, opts):
        return "done"
    return "todo"


# ---- commands --------------------------------------------------------------------------------------

def train_command(spec: RunSpec, opts: Options) -> list[str]:
    args = ["-m", "repro.train", str(spec.config.relative_to(ROOT)), *spec.overrides(opts)]
    if opts.world_size > 1:
        torchrun = Path(opts.python).parent / "torchrun"
        launcher = [str(torchrun)] if torchrun.exists() else [opts.python, "-m", "torch.distributed.run"]
        if opts.nnodes > 1:  # static rendezvous at node 0's address; the same command on every machine
            rendezvous = [f"--nnodes={opts.nnodes}", f"--node_rank={opts.node_rank}",
                          f"--master_addr={opts.master_addr}", f"--master_port={opts.master_port}"]
        else:
            rendezvous = ["--standalone"]
        return [*launcher, *rendezvous, f"--nproc_per_node={opts.gpus}", *args]
    return [opts.python, *args]


def evaluate_command(spec: RunSpec, opts: Options) -> list[str]:
    return [opts.python, "-m", "repro.evaluate", str(spec.run_dir(opts)), "--probe", probe_kind(spec, opts)]


def figure2_command(opts: Options) -> list[str]:
    data = opts.cifar10 or opts.data_dir
    command = [opts.python, "-m", "repro.linear_regime", "--data", data, "--out", str(opts.out / "figure2")]
    if not opts.cifar10 and opts.prepare_data == "auto":
        command.append("--download")
    return command


DATA_SOURCES = {  # dataset -> (source inside DATA_DIR, .beton of the two-view training split, converter)
    "cifar10": ("cifar-10-batches-py", "ffcv/cifar10_train.beton",
                ["-m", "data_prep.write_cifar", "--dataset", "cifar10", "--splits", "train"]),
    "cifar100": ("cifar-100-python", "ffcv/cifar100_train.beton",
                 ["-m", "data_prep.write_cifar", "--dataset", "cifar100", "--splits", "train"]),
    "stl10": ("stl10_binary", "ffcv/stl10_train+unlabeled.beton",
              ["-m", "data_prep.write_stl10", "--splits", "train+unlabeled"]),
    "imagenet": ("train", "ffcv/imagefolder_train.beton",
                 ["-m", "data_prep.write_imagefolder", "--splits", "train"]),
}


def data_steps(specs: list[RunSpec], opts: Options) -> list[tuple[str, list[str] | None]]:
    """(description, command or None) per dataset: download the source if absent, write the FFCV
    file of the training split if ffcv is installed and the file is absent."""
    if opts.prepare_data == "none":
        return []
    import importlib.util
    has_ffcv = importlib.util.find_spec("ffcv") is not None
    steps = []
    for dataset in dict.fromkeys(s.dataset for s in specs if s.config.exists()):
        if any(o.startswith("data.dataset=") for o in opts.overrides):
            continue  # the runs read another dataset than the experiment's: nothing to prepare
        root = Path(opts.imagenet_dir or Path(opts.data_dir) / "imagenet") if dataset == "imagenet" \
            else Path(opts.data_dir)
        source, beton, converter = DATA_SOURCES[dataset]
        if not (root / source).exists():
            if dataset == "imagenet":
                steps.append((f"data: no ImageNet at {root}/train: put the image folder (train/, val/) there "
                              f"or pass IMAGENET_DIR=...", None))
                continue
            steps.append((f"data: download {dataset} into {root}",
                          [opts.python, "-m", "repro.experiments", "download", dataset, "--data-dir", str(root)]))
        if (root / beton).exists():
            steps.append((f"data: {root / beton} exists", None))
        elif has_ffcv:
            steps.append((f"data: FFCV file for {dataset}", [opts.python, *converter, "--root", str(root)]))
        else:
            steps.append((f"data: ffcv not installed: {dataset} trains from the torchvision loader", None))
    return steps


# what a download fetches, for the message when it cannot: (folder it unpacks to, archive URL)
DOWNLOAD_SOURCES = {
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "stl10": ("stl10_binary", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
}


def download(dataset: str, data_dir: str) -> None:
    import tarfile

    import torchvision
    classes = {"cifar10": lambda: torchvision.datasets.CIFAR10(data_dir, train=True, download=True),
               "cifar100": lambda: torchvision.datasets.CIFAR100(data_dir, train=True, download=True),
               "stl10": lambda: torchvision.datasets.STL10(data_dir, split="train", download=True)}
    if dataset not in classes:
        raise UserError(f"download {dataset}: only {', '.join(classes)} can be downloaded (ImageNet: by hand)")
    try:
        classes[dataset]()
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as err:  # URLError is an OSError
        folder, url = DOWNLOAD_SOURCES[dataset]
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise UserError(f"download of {dataset} into {data_dir} failed ({detail}): without network, put "
                        f"{folder}/ (unpacked from {url}) or that .tar.gz in {data_dir}/ and run again, "
                        f"or set PREPARE_DATA=none if the data is elsewhere") from None


# ---- execution --------------------------------------------------------------------------------------

class Runner:
    """Prints each command; runs it unless dry-run; remembers failures."""

    poll_seconds = 5.0   # how often a run that must stop at an epoch is looked at

    def __init__(self, opts: Options):
        self.opts = opts
        self.failures: list[str] = []

    def say(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def run(self, command: list[str], *, stop_when=None, critical: bool = False) -> int:
        """critical: the caller stops on a failure (no "continuing" line)."""
        print(shlex.join(command), flush=True)
        if self.opts.dry_run:
            return 0
        if stop_when is None:
            code = subprocess.call(command, cwd=ROOT)
        else:
            code = self._run_until(command, stop_when)
        if code != 0:
            self.failures.append(f"exit {code}: {shlex.join(command)}")
            print(f"# FAILED (exit {code})" + ("" if critical else "; continuing with the next step"), flush=True)
        return code

    def _run_until(self, command: list[str], stop_when) -> int:
        """Run, and end it with SIGTERM (the trainer checkpoints and exits) once stop_when() holds."""
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        try:
            while process.poll() is None:
                if stop_when():
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
                    print("# stopped with SIGTERM as planned (checkpoint kept; a later run resumes it)", flush=True)
                    return 0
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        return process.returncode


def run_specs(specs: list[RunSpec], opts: Options, runner: Runner) -> None:
    methods = registered_methods()
    for description, command in data_steps(specs, opts):
        runner.say(description)
        if command and runner.run(command, critical=True) != 0:  # never train on missing data
            raise UserError(f"{description} failed (its error is above), nothing was trained: fix it "
                            f"(docs/data.md) or put the data in place by hand, then run the target again")
    evaluate_later: list[tuple[RunSpec, str]] = []
    for spec in specs:
        label = f"{spec.dataset}/{spec.row} seed {spec.seed} ({spec.name})"
        reason = missing_reason(spec, methods)
        if reason:
            runner.say(f"{label}: MISSING ({reason})")
            continue
        state = train_state(spec, opts)
        if state in ("done", "stopped"):
            runner.say(f"{label}: trained ({state}), skipped")
        else:
            runner.say(f"{label}: {'train' if state == 'new' else 'resume'}"
                       + (f" until epoch {spec.stop_at_epoch} is validated" if spec.stop_at_epoch else ""))
            run_dir = spec.run_dir(opts)
            stop = (lambda d=run_dir, e=spec.stop_at_epoch: max(online_by_epoch(d), default=0) >= e) \
                if spec.stop_at_epoch else None
            if runner.run(train_command(spec, opts), stop_when=stop) != 0:
                continue
        if spec.evaluate:
            if opts.nnodes > 1:  # every node trains in lock-step; node 0 evaluates once all are trained
                evaluate_later.append((spec, label))
            else:
                evaluate_run(spec, label, opts, runner)
    if evaluate_later and opts.node_rank == 0:
        runner.say("every run trained: node 0 evaluates them")
        for spec, label in evaluate_later:
            evaluate_run(spec, label, opts, runner)
    elif evaluate_later:
        runner.say(f"node {opts.node_rank}: evaluation runs on node 0")


def evaluate_run(spec: RunSpec, label: str, opts: Options, runner: Runner) -> None:
    if not opts.dry_run and train_state(spec, opts) != "done":
        runner.say(f"{label}: not finished, no evaluation")
    elif eval_state(spec, opts) == "done":
        runner.say(f"{label}: evaluated, skipped")
    else:
        runner.run(evaluate_command(spec, opts))


# ---- results ---------------------------------------------------------------------------------------

def comparable(spec: RunSpec, opts: Options) -> tuple[bool, str]:
    """A run is comparable when its config equals the reference setting except non-semantic keys;
    the reference is the paper's setting (the short profile's for PROFILE=short)."""
    from repro.config import diff, load_config
    run_dir = spec.run_dir(opts)
    try:
        saved = load_config(run_dir / "config.yaml")
        reference = load_config(spec.config, spec.reference)
    except UserError as err:  # e.g. a config or method renamed since the run
        return False, f"config cannot be compared ({err})"
    changes = [c for c in diff(reference, saved)
               if not any(c.split(":")[0] == k or c.startswith(k + ".") for k in NON_SEMANTIC)]
    if changes:
        changes.sort(key=lambda c: not c.startswith("optim.epochs"))  # the most common reason first
        keys = ", ".join(c.split(":")[0] for c in changes[1:])
        setting = "paper" if opts.profile == "paper" else opts.profile
        return False, f"differs from the {setting} setting: {changes[0]}" + (f"; also {keys}" if keys else "")
    return True, ""


def _aggregate(values: list[tuple[float, bool, str, str]]) -> dict:
    """Cell from per-seed (value, comparable, reason, run) tuples: the mean over seeds."""
    numbers = [v for v, _, _, _ in values]
    finite = [v for v in numbers if math.isfinite(v)]
    mean = (sum(finite) / len(finite) if len(finite) == len(numbers) else math.inf) if numbers else None
    std = None
    if len(finite) > 1:
        std = (sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5
    reasons = sorted({r for _, ok, r, _ in values if not ok})
    return {"value": "inf" if mean is not None and math.isinf(mean) else mean,
            "comparable": all(ok for _, ok, _, _ in values), "reason": "; ".join(reasons),
            "n": len(values), "std": std, "runs": [run for _, _, _, run in values],
            "per_seed": numbers}


def _finished(spec: RunSpec, opts: Options) -> bool:
    return train_state(spec, opts) == "done"


def collect_tables(opts: Options, experiment: str) -> dict:
    """Cells of Table 2 (linear probe) or Table 3 (online top-1 at epochs 3-100) from the run folders."""
    per_cell: dict[str, list] = {}
    missing: dict[str, str] = {}
    methods = registered_methods()
    rows = TABLE_ROWS if experiment == "table2" else TABLE3_ROWS
    datasets = TABLE2_DATASETS if experiment == "table2" else ["stl10"]
    for dataset in datasets:
        for row in rows:
            spec0 = table_specs(opts, [row], [dataset])[0]
            for seed in seeds_on_disk(opts, spec0):
                spec = table_specs(replace(opts, seeds=(seed,)), [row], [dataset])[0]
                run_dir = spec.run_dir(opts)
                ok, reason = comparable(spec, opts)
                if experiment == "table2":
                    if not _finished(spec, opts):
                        continue
                    epochs = planned_epochs(spec, opts)
                    result = None
                    for probe in ("full", "cached"):
                        path = run_dir / f"eval_{probe}.json"
                        found = json.loads(path.read_text()) if path.exists() else {}
                        if found.get("checkpoint_epoch") == epochs:
                            result, kind = found, probe
                            break
                    if result is None:
                        continue
                    cell_ok, cell_reason = ok, reason
                    if kind != "full":
                        cell_ok, cell_reason = False, "; ".join(x for x in (reason, "cached probe, not the paper's") if x)
                    per_cell.setdefault(f"{dataset}/{row}", []).append(
                        (100 * result["linear_top1"], cell_ok, cell_reason, str(run_dir)))
                else:
                    online = online_by_epoch(run_dir)
                    for epoch in TABLE3_EPOCHS:
                        if epoch in online:
                            per_cell.setdefault(f"epoch{epoch}/{row}", []).append(
                                (100 * online[epoch]["online_top1"], ok, reason, str(run_dir)))
            reason = missing_reason(spec0, methods)
            if reason:
                missing[row] = reason
    cells = {cell: _aggregate(values) for cell, values in per_cell.items()}
    if experiment == "table2":  # the paper's "Average" column, when a row has all three datasets
        for row in rows:
            parts = [cells.get(f"{d}/{row}") for d in TABLE2_DATASETS]
            if all(p is not None and isinstance(p["value"], float) for p in parts):
                cells[f"average/{row}"] = {
                    "value": sum(p["value"] for p in parts) / 3, "comparable": all(p["comparable"] for p in parts),
                    "reason": "; ".join(sorted({p["reason"] for p in parts if p["reason"]})), "n": min(p["n"] for p in parts),
                    "std": None, "runs": [r for p in parts for r in p["runs"]]}
    return {"cells": cells, "missing_rows": missing}


def seeds_on_disk(opts: Options, spec: RunSpec) -> list[int]:
    """Seeds of this run name found under --out (every seed present counts, not only SEEDS)."""
    prefix, suffix = spec.name.split("-seed")[0] + "-seed", opts.suffix
    seeds = []
    if opts.out.is_dir():
        for path in opts.out.glob(f"{prefix}*"):
            middle = path.name[len(prefix):]
            number = middle[:len(middle) - len(suffix)] if suffix and middle.endswith(suffix) else middle
            if number.isdigit() and path.name == f"{prefix}{number}{suffix}" and (path / "config.yaml").exists():
                seeds.append(int(number))
    return sorted(seeds)


def collect_figure3(opts: Options) -> dict:
    from repro.spectra import read_spectra, summarize
    cells, curves, missing = {}, {}, {}
    methods = registered_methods()
    for row in FIGURE3_ROWS:
        spec0 = figure3_specs(opts, [row])[0]
        reason = missing_reason(spec0, methods)
        if reason:
            missing[row] = reason
        per_metric: dict[str, list] = {}
        for seed in seeds_on_disk(opts, spec0):
            spec = figure3_specs(replace(opts, seeds=(seed,)), [row])[0]
            if not _finished(spec, opts):
                continue
            records = read_spectra(spec.run_dir(opts))
            summary = summarize(records)
            if summary is None:
                continue
            ok, why = comparable(spec, opts)
            for metric in ("condition_number", "entropy", "saturation_step"):
                value = summary[metric]
                value = math.inf if value is None else float(value)
                per_metric.setdefault(metric, []).append((value, ok, why, str(spec.run_dir(opts))))
            curves.setdefault(row, {"step": [r["step"] for r in records],
                                    "eigenvalues": [r["eigenvalues"] for r in records],
                                    "saturation_step": summary["saturation_step"]})
        for metric, values in per_metric.items():
            cells[f"{metric}/{row}"] = _aggregate(values)
    return {"cells": cells, "missing_rows": missing, "curves": curves}


def collect_figure4(opts: Options) -> dict:
    cells, curves, missing = {}, {}, {}
    methods = registered_methods()
    for row in FIGURE4_ROWS:
        spec0 = figure4_specs(opts, [row])[0]
        reason = missing_reason(spec0, methods)
        if reason:
            missing[row] = reason
        finals: dict[str, list] = {}
        for seed in seeds_on_disk(opts, spec0):
            spec = figure4_specs(replace(opts, seeds=(seed,)), [row])[0]
            run_dir = spec.run_dir(opts)
            ok, why = comparable(spec, opts)
            online = online_by_epoch(run_dir)
            if 1 in online:
                finals.setdefault("epoch1_top1", []).append((100 * online[1]["online_top1"], ok, why, str(run_dir)))
            curves.setdefault(row, {
                "epoch": [e for e in sorted(online) if e <= FIGURE4_EPOCHS],
                "top1": [100 * online[e]["online_top1"] for e in sorted(online) if e <= FIGURE4_EPOCHS],
                "top5": [100 * online[e].get("online_top5", math.nan) for e in sorted(online) if e <= FIGURE4_EPOCHS]})
            if _finished(spec, opts):
                path = run_dir / f"eval_{probe_kind(spec, opts)}.json"
                if path.exists():
                    result = json.loads(path.read_text())
                    probe_ok = ok and result.get("probe") == "full"
                    why_probe = why if result.get("probe") == "full" else "; ".join(x for x in (why, "cached probe") if x)
                    finals.setdefault("final_top1", []).append((100 * result["linear_top1"], probe_ok, why_probe, str(run_dir)))
                    finals.setdefault("final_top5", []).append((100 * result["linear_top5"], probe_ok, why_probe, str(run_dir)))
        for column, values in finals.items():
            cells[f"{column}/{row}"] = _aggregate(values)
    a, b = cells.get("epoch1_top1/frossl"), cells.get("epoch1_top1/barlow_twins")
    if a and b and isinstance(a["value"], float) and isinstance(b["value"], float):
        cells["lead_epoch1_top1/frossl"] = {
            "value": a["value"] - b["value"], "comparable": a["comparable"] and b["comparable"],
            "reason": "; ".join(dict.fromkeys(x for x in (a["reason"], b["reason"]) if x)), "n": min(a["n"], b["n"]),
            "std": None, "runs": a["runs"] + b["runs"]}
    return {"cells": cells, "missing_rows": missing, "curves": curves}


def collect_figure2(opts: Options) -> dict:
    from repro.linear_regime import Settings
    path = opts.out / "figure2" / "figure2.json"
    if not path.exists():
        return {"cells": {}, "missing_rows": {}}
    result = json.loads(path.read_text())
    ok = result["settings"] == Settings().__dict__
    reason = "" if ok else "settings differ from repro.linear_regime's defaults"
    cells = {}
    for variant in ("eq8", "barlow"):
        t = result["summary"][variant]["saturation_t_top"]
        cells[f"saturation_t_top10/{variant}"] = {"value": "inf" if t is None or t == math.inf else t,
                                                  "comparable": ok, "reason": reason, "n": 1, "std": None,
                                                  "runs": [str(path)]}
    return {"cells": cells, "missing_rows": {}, "verdict": result["verdict"], "seconds": result["seconds"]}


def collect(experiment: str, opts: Options) -> Path:
    """Write <out>/results/<experiment>[-variant].json (and the figure's PNG) from the run folders."""
    if experiment in ("table2", "table3"):
        content = collect_tables(opts, experiment)
    elif experiment == "figure2":
        content = collect_figure2(opts)
    elif experiment == "figure3":
        content = collect_figure3(opts)
    elif experiment == "figure4":
        content = collect_figure4(opts)
    else:
        raise UserError(f"collect {experiment}: choose table2, table3, figure2, figure3 or figure4")
    from repro.atomic import atomic_write_bytes, atomic_write_text
    from repro.checkpoint import environment
    opts.results.mkdir(parents=True, exist_ok=True)
    stem = opts.result_stem(experiment)
    result = {"experiment": experiment, "profile": opts.profile, "variant": opts.variant,
              "epochs_override": opts.epochs, "overrides": list(opts.overrides),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": shlex.join([Path(sys.executable).name, "-m", "repro.experiments", *sys.argv[1:]]),
              "environment": environment(), **content}
    figure = None
    if experiment == "figure2" and (opts.out / "figure2" / "figure2.png").exists():
        figure = opts.results / f"{stem}.png"
        png = (opts.out / "figure2" / "figure2.png").read_bytes()
        atomic_write_bytes(figure, lambda f: f.write(png))
    elif experiment == "figure3" and content.get("curves"):
        figure = plot_figure3(content, opts.results / f"{stem}.png")
    elif experiment == "figure4" and content.get("curves"):
        figure = plot_figure4(content, opts.results / f"{stem}.png")
    if figure:
        result["figure"] = figure.name
    path = opts.results / f"{stem}.json"
    # atomic: a crash mid-write keeps the previous result file, never half of one
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    print(f"# results: {path}", flush=True)
    return path


def plot_figure3(content: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    from repro.atomic import atomic_write_bytes
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_figure4(content: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for row, curve in content["curves"].items():
        axes[0].plot(curve["epoch"], curve["top1"], marker=".", label=row)
        axes[1].plot(curve["epoch"], curve["top5"], marker=".", label=row)
    for ax, name in zip(axes, ("top-1", "top-5")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"online {name} (%)")
        ax.legend()
    fig.suptitle(f"Figure 4 (reproduced): ImageNet ResNet18, first {FIGURE4_EPOCHS} epochs", fontsize=10)
    fig.tight_layout()
    from repro.atomic import atomic_write_bytes
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def record_short(experiment: str, opts: Options) -> Path:
    """Store the comparable short-profile cells of a collected result as the short reference
    (expected_results/short/<experiment>.yaml), with the command, hardware and date."""
    path = opts.results / f"{experiment}-short.json"
    if opts.profile != "short" or not path.exists():
        raise UserError(f"record needs a collected short-profile result ({path}): run "
                        f"`make {experiment} PROFILE=short` first")
    result = json.loads(path.read_text())
    env = result.get("environment", {})
    hardware = f"{env.get('gpu_count', 0)}x {env.get('gpu') or 'CPU'}, torch {env.get('torch')}, CUDA {env.get('cuda')}"
    spec = yaml.safe_load((EXPECTED_DIR / f"{experiment}.yaml").read_text())
    tolerance = (spec.get("tolerance") or {}).get("default")
    cells = {cell: {"value": round(c["value"], 2), "tolerance": tolerance, "n": c["n"],
                    "command": f"make {experiment} PROFILE=short", "hardware": hardware,
                    "date": result["created"][:10], "commit": env.get("git_commit"), "runs": c["runs"]}
             for cell, c in result["cells"].items() if c["comparable"] and isinstance(c["value"], float)}
    if not cells:
        raise UserError(f"{path} holds no comparable short-profile cell: nothing to record")
    out = EXPECTED_DIR / "short" / f"{experiment}.yaml"
    out.parent.mkdir(exist_ok=True)
    header = (f"# {experiment}, PROFILE=short: reference values MEASURED by this project (not the paper's),\n"
              f"# recorded by `python -m repro.experiments record {experiment} --profile short` from {path}.\n")
    from repro.atomic import atomic_write_text
    atomic_write_text(out, header + yaml.safe_dump({"experiment": experiment, "profile": "short", "cells": cells},
                                                   sort_keys=False))
    print(f"recorded {len(cells)} cells in {out}")
    return out


# ---- targets ---------------------------------------------------------------------------------------

def check_command(opts: Options, experiments: list[str], rows: list[str] | None = None, stem: str = "check") -> list[str]:
    command = [opts.python, "-m", "repro.check", "--results", str(opts.results), "--only", ",".join(experiments),
               "--variant", opts.variant, "--profile", opts.profile, "--save-as", stem]
    if rows:
        command += ["--rows", ",".join(rows)]
    return command


def collect_command(opts: Options, experiment: str) -> list[str]:
    return [opts.python, "-m", "repro.experiments", "collect", experiment, *option_args(opts)]


def option_args(opts: Options) -> list[str]:
    args = ["--out", str(opts.out), "--data-dir", opts.data_dir, "--seeds", ",".join(map(str, opts.seeds)),
            "--profile", opts.profile, "--spectra-every", str(opts.spectra_every)]
    if opts.epochs is not None:
        args += ["--epochs", str(opts.epochs)]
    if opts.overrides:
        args += ["--overrides", " ".join(opts.overrides)]
    if opts.probe:
        args += ["--probe", opts.probe]
    if opts.imagenet_dir:
        args += ["--imagenet-dir", opts.imagenet_dir]
    if opts.cifar10:
        args += ["--cifar10", opts.cifar10]
    return args


def run_target(target: str, opts: Options) -> int:
    """Run one target; returns the exit status (1 on a FAIL or a failed step)."""
    if target == "figure2" and (opts.epochs is not None or opts.overrides):
        # EPOCHS and OVERRIDES change training runs; Figure 2 has none. Its result keeps the paper's
        # name (collect_figure2 judges it by repro.linear_regime's settings), so `make all EPOCHS=N`
        # does not file a paper-setting Figure 2 under the EPOCHS variant and leave the paper's MISSING.
        print("# figure2: EPOCHS and OVERRIDES apply to training runs only, not to Figure 2", flush=True)
        opts = replace(opts, epochs=None, overrides=())
    runner = Runner(opts)
    if target == "all":
        preflight("all", opts)  # every sub-target's runs, before the first one starts
        code = 0
        for sub in ("figure2", "table2", "table3", "figure3", "figure4"):
            sub_opts = _narrow(sub, opts)
            if sub_opts is None:
                runner.say(f"{sub}: nothing selected by METHODS/DATASETS/PROFILE, skipped")
                continue
            code |= run_target(sub, sub_opts)
        if opts.node_rank > 0:
            runner.say(f"node {opts.node_rank}: the full check and the report run on node 0")
            return int(bool(code or runner.failures))
        runner.say("the full check, then the report")
        code |= runner.run([opts.python, "-m", "repro.check", "--results", str(opts.results)]) != 0
        runner.run([opts.python, "-m", "repro.report", "--results", str(opts.results)])
        return int(bool(code or runner.failures))

    opts_profile_ok = {"figure2": ("paper",), "figure3": ("paper",)}
    if opts.profile not in opts_profile_ok.get(target, ("paper", "short")):
        raise UserError(f"PROFILE={opts.profile}: {target} has only the paper's setting (it is cheap already)")
    runner.say(f"{target}: out={opts.out} gpus={opts.gpus} profile={opts.profile}"
               + (f" nodes={opts.nnodes} node_rank={opts.node_rank} master={opts.master_addr}:{opts.master_port}"
                  if opts.nnodes > 1 else "")
               + (f" variant: {opts.variant} (NOT-COMPARABLE to the paper)" if opts.variant else ""))
    if target == "figure2" and opts.node_rank > 0:
        runner.say(f"figure2: one CPU process, run on node 0 (this is node {opts.node_rank})")
        return 0
    if target == "figure2":
        if (opts.out / "figure2" / "figure2.json").exists():
            runner.say("figure2: done (delete <out>/figure2 to redo it)")
        else:
            runner.run(figure2_command(opts))
        experiments, rows = ["figure2"], None
    else:
        specs = specs_for(target, opts)
        preflight(target, opts, specs)  # configs load, batches split, GPUS fits: before anything runs
        run_specs(specs, opts, runner)
        experiments = {"table2": ["table2"], "table3": ["table3"], "ablation": ["table2", "table3"],
                       "figure3": ["figure3"], "figure4": ["figure4"]}[target]
        rows = ABLATION_ROWS if target == "ablation" else (list(opts.methods) or None)
        if target == "ablation":
            runner.say("ablation: the STL-10 runs also give Table 3's no-logs rows (validated every epoch)")
    if opts.node_rank > 0:
        runner.say(f"node {opts.node_rank} of {opts.nnodes}: training done; node 0 collects and checks")
        if runner.failures:
            print("# failed steps:\n" + "\n".join(f"#   {f}" for f in runner.failures), flush=True)
        return int(bool(runner.failures))
    for experiment in experiments:
        if opts.dry_run:
            runner.run(collect_command(opts, experiment))
        else:
            collect(experiment, opts)
    code = runner.run(check_command(opts, experiments, rows, stem=f"check_{target}"))
    if runner.failures:
        print("# failed steps:\n" + "\n".join(f"#   {f}" for f in runner.failures), flush=True)
    return int(bool(code or runner.failures))


def _narrow(target: str, opts: Options) -> Options | None:
    """`all` with METHODS/DATASETS: keep what applies to this target (None: nothing applies)."""
    if opts.profile != "paper" and target in ("figure2", "figure3"):
        return None
    rows = {"table2": TABLE_ROWS, "table3": TABLE3_ROWS, "figure3": FIGURE3_ROWS, "figure4": FIGURE4_ROWS}.get(target)
    datasets = {"table2": profile_datasets("table2", opts.profile) or TABLE2_DATASETS,  # short: CIFAR-10 only
                "table3": ["stl10"], "figure3": ["stl10"], "figure4": ["imagenet"]}.get(target)
    methods = tuple(m for m in opts.methods if rows is None or m in rows)
    chosen = tuple(d for d in opts.datasets if datasets is None or d in datasets)
    if (opts.methods and rows is not None and not methods) or (opts.datasets and datasets and not chosen):
        return None
    return replace(opts, methods=methods, datasets=chosen if target in ("table2", "table3") else ())


def planned_config(spec: RunSpec, opts: Options):
    """The config a run will train with (its file plus every override), as the trainer will load it;
    a bad key or value is the trainer's one-line ConfigError, naming the run and what to fix."""
    from repro.config import ConfigError, load_config
    try:
        return load_config(spec.config, spec.overrides(opts))
    except ConfigError as err:
        culprit = str(spec.config.relative_to(ROOT)) if spec.config.is_relative_to(ROOT) else str(spec.config)
        if spec.user:
            try:
                load_config(spec.config, [o for o in spec.overrides(opts) if o not in spec.user])
                culprit = "OVERRIDES"
            except ConfigError:
                pass
        raise UserError(f"{err} (run {spec.name}): fix {culprit}; nothing was started") from None


def check_batch_split(specs: list[RunSpec], opts: Options) -> None:
    """Every run's global batch (data.batch_size, overrides included) divides over its processes."""
    for spec in specs:
        if not spec.config.exists():
            continue
        batch = planned_config(spec, opts).data.batch_size
        if batch % opts.world_size == 0:
            continue
        if opts.nnodes > 1:
            what = f"NNODES x GPUS = {opts.nnodes} x {opts.gpus} = {opts.world_size}"
            choices = [g for g in range(1, 9) if batch % (g * opts.nnodes) == 0]
        else:
            what, choices = f"GPUS={opts.gpus}", [g for g in range(1, 9) if batch % g == 0]
        raise UserError(f"{what} does not divide the global batch of {batch} of run {spec.name} "
                        f"({spec.config.name}; the paper: 4 GPUs x 56 = 224): choose GPUS in {choices}"
                        + (f" with NNODES={opts.nnodes}" if opts.nnodes > 1 else "")
                        + f", or a data.batch_size divisible by {opts.world_size}")


def check_devices(configs: list, opts: Options) -> None:
    """GPUS is what this machine runs per run: not more than its visible CUDA devices (CUDA present);
    without CUDA (or with device=cpu) GPUS > 1 means that many CPU processes (gloo)."""
    import torch
    on_cpu = bool(configs) and all(cfg.device == "cpu" for cfg in configs)
    if torch.cuda.is_available() and not on_cpu:
        visible = torch.cuda.device_count()
        if opts.gpus > visible:
            raise UserError(f"GPUS={opts.gpus} but this machine has {visible} visible CUDA device(s): set "
                            f"GPUS={visible} or less (CUDA_VISIBLE_DEVICES limits what is visible)")
    elif opts.gpus > 1:
        why = "the runs have device=cpu" if on_cpu else "no CUDA device on this machine"
        print(f"# {why}: GPUS={opts.gpus} runs {opts.gpus} CPU processes per run (gloo), not GPUs", flush=True)


def preflight(target: str, opts: Options, specs: list[RunSpec] | None = None) -> None:
    """Before anything is prepared, trained or written: every planned run's config loads with its
    overrides, its global batch divides by the number of processes, and (not in --dry-run) GPUS
    fits the visible CUDA devices. Runs whose config or method is not written yet are MISSING, not
    errors."""
    if specs is None:
        specs = []
        for sub in (("table2", "table3", "figure3", "figure4") if target == "all" else (target,)):
            sub_opts = _narrow(sub, opts) if target == "all" else opts
            if sub_opts is not None and sub != "figure2":
                specs += specs_for(sub, sub_opts)
    methods = registered_methods()
    planned = [s for s in specs if not missing_reason(s, methods)]
    configs = [planned_config(spec, opts) for spec in planned]
    check_batch_split(planned, opts)
    if not opts.dry_run and planned:
        check_devices(configs, opts)


# ---- command line ----------------------------------------------------------------------------------

def parse_options(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(prog="python -m repro.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*TARGETS, "collect", "record", "download"])
    parser.add_argument("name", nargs="?", help="collect/record: the experiment; download: the dataset")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--gpus", default="1", help="processes per run (torchrun when > 1)")
    parser.add_argument("--out", default="runs", help="folder of the run folders; results in OUT/results")
    parser.add_argument("--data-dir", default="data", help="datasets (data.root of every run)")
    parser.add_argument("--imagenet-dir", default="", help="ImageNet image folder (default DATA_DIR/imagenet)")
    parser.add_argument("--cifar10", default="", help="Figure 2's CIFAR-10 (default DATA_DIR; a .tar.gz of the image folder works)")
    parser.add_argument("--methods", default="", help="rows (config names), comma or space separated; default: all")
    parser.add_argument("--datasets", default="", help="datasets; default: the experiment's")
    parser.add_argument("--seeds", default="0", help="seeds, e.g. '0 1 2'")
    parser.add_argument("--epochs", default="", help="override every run's epochs (NOT-COMPARABLE)")
    parser.add_argument("--profile", default="paper", choices=["paper", "short"])
    parser.add_argument("--probe", default="", choices=["", "full", "cached"], help="linear probe (default: the config's)")
    parser.add_argument("--overrides", default="", help="extra key=value config overrides for every run (NOT-COMPARABLE)")
    parser.add_argument("--prepare-data", default="auto", choices=["auto", "none"],
                        help="auto: download missing datasets, write FFCV files when ffcv is installed")
    parser.add_argument("--spectra-every", default="10", help="Figure 3: steps between eigenvalue records")
    parser.add_argument("--nnodes", default="1", help="machines per run (torchrun --nnodes); > 1 needs --master-addr")
    parser.add_argument("--node-rank", default="0", help="this machine, 0..NNODES-1 (0 evaluates, collects, checks)")
    parser.add_argument("--master-addr", default="", help="address of the NODE_RANK=0 machine (NNODES > 1)")
    parser.add_argument("--master-port", default="29500", help="a free TCP port on the NODE_RANK=0 machine")
    args = parser.parse_args(argv)
    try:
        gpus = int(args.gpus or 1)
        seeds = tuple(int(s) for s in _words(args.seeds)) or (0,)
        epochs = int(args.epochs) if str(args.epochs).strip() else None
        spectra_every = int(args.spectra_every)
    except ValueError as err:
        raise UserError(f"GPUS, SEEDS, EPOCHS and the spectra interval must be integers ({err})") from None
    if gpus < 1 or (epochs is not None and epochs < 1):
        raise UserError("GPUS and EPOCHS must be >= 1")
    try:
        nnodes, node_rank = int(args.nnodes or 1), int(args.node_rank or 0)
        master_port = int(args.master_port or 29500)
    except ValueError as err:
        raise UserError(f"NNODES, NODE_RANK and MASTER_PORT must be integers ({err}): e.g. NNODES=2 NODE_RANK=0 "
                        f"MASTER_PORT=29500") from None
    master_addr = (args.master_addr or "").strip()
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UserError(f"NNODES={nnodes} NODE_RANK={node_rank}: NNODES must be >= 1 and NODE_RANK one of "
                        f"0..{max(nnodes, 1) - 1} (0 on the machine at MASTER_ADDR)")
    if nnodes > 1 and not master_addr:
        raise UserError(f"NNODES={nnodes} needs MASTER_ADDR: set MASTER_ADDR=<address of the NODE_RANK=0 machine, "
                        f"reachable from every node> on every node")
    if not 0 < master_port < 65536:
        raise UserError(f"MASTER_PORT={master_port}: choose a free TCP port in 1..65535 (default 29500)")
    if Path.cwd().resolve() != ROOT:  # commands run in the repository: paths given elsewhere become absolute
        for key in ("out", "data_dir", "imagenet_dir", "cifar10"):
            if getattr(args, key):
                setattr(args, key, str(Path(getattr(args, key)).resolve()))
    opts = Options(out=Path(args.out), data_dir=args.data_dir, imagenet_dir=args.imagenet_dir, cifar10=args.cifar10,
                   gpus=gpus, methods=tuple(_words(args.methods)), datasets=tuple(_words(args.datasets)),
                   seeds=seeds, epochs=epochs, profile=args.profile, probe=args.probe,
                   overrides=tuple(shlex.split(args.overrides)), prepare_data=args.prepare_data,
                   spectra_every=spectra_every, dry_run=args.dry_run, nnodes=nnodes, node_rank=node_rank,
                   master_addr=master_addr, master_port=master_port)
    return args, opts


def main(argv: list[str]) -> int:
    args, opts = parse_options(argv)
    if args.target == "collect":
        collect(args.name or "", opts)
        return 0
    if args.target == "record":
        record_short(args.name or "", opts)
        return 0
    if args.target == "download":
        download(args.name or "", opts.data_dir)
        return 0
    return run_target(args.target, opts)


if __name__ == "__main__":
    run_cli(main)
