"""`make gpu-check`: the first thing to run on a GPU machine (at most 9 minutes on one GPU by default, --budget).

    make gpu-check CIFAR10=cifar10-jpeg.tar.gz                 # with the project's .venv
    python3 -m repro.gpu_check --data cifar10-jpeg.tar.gz      # a node's own torch, no make, no ffcv
    python3 -m repro.gpu_check                                 # no data: environment, CUDA tests, bench
    python3 -m repro.gpu_check --dry-run                       # CPU: every part that needs no CUDA, tiny

Parts, each recorded even when another fails (subprocesses, logs in OUT/logs/; docs/gpu-check.md):
environment, cuda_tests (tests/test_cuda.py), bench_eager / bench_compile (benchmarks.bench_step),
train (a short FroSSL CIFAR-10 run: s/epoch, images/s, peak memory, online top-1) and estimate
(every target's wall time from the measured epoch time, repro/gpu_check/estimate.py).
Writes OUT/gpu_check.json and OUT/gpu_check.md (default OUT: runs/gpu-check) after every part, so a
run cut off keeps every finished part; exit 0 when no part failed, 1 when one did, 2 on bad input.
--data (or $CIFAR10): the CIFAR-10 JPEG archive (train/<class>/, test/<class>/ inside), its unpacked
folder, or a folder holding torchvision's cifar-10-batches-py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from repro.atomic import atomic_write_text, write_json
from repro.cli import UserError
from repro.gpu_check.data import prepare_data, synthetic_data
from repro.gpu_check.env import environment, nvidia_smi, preflight
from repro.gpu_check.report import parse_bench, parse_train, render_markdown

ROOT = Path(__file__).resolve().parents[2]   # the repository (this file: repro/gpu_check/)
DEFAULT_BUDGET_MIN = 9.0
PARTS = ("environment", "cuda_tests", "bench_eager", "bench_compile", "train", "estimate")
# the project's own commands (module arguments after `python`); tests replace them to inject failures
TRAINER = ["-m", "repro.train"]
BENCH = ["-m", "benchmarks.bench_step"]
PYTEST = ["-m", "pytest"]
TRAIN_CONFIG = "repro/configs/cifar10/frossl.yaml"


@dataclass(frozen=True)
class Settings:
    """Sizes of each part. Full: one GPU, within the default 9-minute budget (never yet run on a GPU);
    dry: CPU, tiny."""
    dry: bool
    epochs: int
    batch: int
    width: int
    proj_dim: int
    per_class: dict            # images per class unpacked from the archive (0: all)
    synthetic: dict            # images per split of the synthetic batches (no data given)
    bench_args: list
    workers: int
    log_every: int
    timeouts: dict             # seconds per command of each part
    deadline: float            # time.perf_counter() by which everything must end (the budget)

    @classmethod
    def make(cls, dry: bool, epochs: int | None, deadline: float = math.inf) -> "Settings":
        if dry:
            # 40 training images: 2 steps of 16 per epoch
            return cls(True, epochs or 2, 16, 8, 32, {"train": 4, "test": 2}, {"train": 80, "test": 20},
                       ["--batch", "16", "--width", "8", "--steps", "1", "--warmup", "1", "--workers", "0",
                        "--device", "cpu"], 0, 1, {"cuda_tests": 60, "bench": 300, "train": 300}, deadline)
        # 9 minutes: 120 + 2 x 100 + 200 s of commands, the rest for data and start-up; the synthetic
        # set holds the bench's 25 batches of 256 without an epoch boundary
        return cls(False, epochs or 3, 256, 64, 0, {"train": 0, "test": 0}, {"train": 10240, "test": 1000},
                   ["--steps", "20", "--warmup", "5"], -1, 20, {"cuda_tests": 120, "bench": 100, "train": 200},
                   deadline)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def limit(self, kind: str) -> float:
        """Seconds a command of this kind may run: its own limit, or less when the budget ends first."""
        return max(0.0, min(self.timeouts[kind], self.remaining()))


@dataclass
class Part:
    name: str
    status: str = "skipped"    # passed | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    command: str = ""
    log: str = ""
    details: dict = field(default_factory=dict)


def run_command(part: Part, args: list[str], logs: Path, timeout: float, poll_gpu_memory: bool = False) -> int:
    """Run `python ARGS` in the repository root, output to logs/<part>.log; returns the exit status
    (124 on timeout). With poll_gpu_memory, the device's peak used memory (nvidia-smi, every
    second) goes to part.details["peak_gpu_memory_smi_gib"]."""
    cmd = [sys.executable, *args]
    part.command = " ".join(cmd)
    log = logs / f"{part.name}.log"
    part.log = str(log)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    peak_mib = 0.0
    with open(log, "w") as out:
        out.write(f"$ {part.command}\n")
        out.flush()
        # its own process group, so that a timeout also stops its workers (DataLoader, torchrun)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        while True:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if poll_gpu_memory:
                    rows = nvidia_smi("memory.used") or []
                    peak_mib = max([peak_mib] + [float(r) for r in rows if r.strip().replace(".", "").isdigit()])
                if time.perf_counter() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    code = 124
                    break
    part.seconds = round(time.perf_counter() - start, 1)
    if peak_mib:
        part.details["peak_gpu_memory_smi_gib"] = round(peak_mib / 1024, 2)
    if code:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        part.status = "failed"
        part.reason = (f"timed out after {timeout:.0f} s" if code == 124 else f"exit status {code}") + \
            (f": {tail[0][:300]}" if tail else "") + f" (log: {log})"
    return code


def cuda_tests(part: Part, logs: Path, settings: Settings, optional: dict) -> None:
    if optional.get("pytest") is None or str(optional.get("pytest")).startswith("broken"):
        part.status, part.reason = "failed", "pytest does not import: the CUDA tests need it"
        return
    code = run_command(part, [*PYTEST, "tests/test_cuda.py", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"],
                       logs, settings.limit("cuda_tests"))
    lines = Path(part.log).read_text(errors="replace").splitlines()
    part.details["summary"] = next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and
                                    any(w in ln for w in ("passed", "failed", "skipped", "error"))), "")
    part.details["skipped"] = [ln.split("] ", 1)[-1] for ln in lines if ln.startswith("SKIPPED")]
    if code == 0:
        part.status = "passed"


def bench(part: Part, logs: Path, settings: Settings, data, loader: str, compile_: bool) -> dict | None:
    out = logs.parent / f"{part.name}.json"
    args = [*BENCH, "--root", str(data.cifar_pickles), "--loader", loader, *settings.bench_args, "--out", str(out)]
    if compile_:
        args.append("--compile")
    if run_command(part, args, logs, settings.limit("bench")) == 0:
        try:
            part.details = {**parse_bench(json.loads(out.read_text())), "data": data.kind}
            part.status = "passed"
        except (OSError, ValueError, KeyError) as err:
            part.status, part.reason = "failed", f"bench ran but its JSON {out} is unreadable: {err}"
    return part.details or None


def train(part: Part, logs: Path, settings: Settings, data, loader: str, work: Path, cuda: bool) -> None:
    run_name = "frossl-cifar10"
    runs = work / "runs"
    shutil.rmtree(runs / run_name, ignore_errors=True)   # a fresh run every time (the trainer resumes)
    if loader == "ffcv":
        convert = Part(name="train_data")
        if run_command(convert, data.convert_args, logs, settings.limit("train")):
            part.status, part.reason = "failed", f"FFCV conversion failed: {convert.reason}"
            part.command = convert.command
            return
        part.details["conversion_s"] = convert.seconds
    overrides = [*data.train_overrides, f"data.loader={loader}", f"data.batch_size={settings.batch}",
                 f"optim.epochs={settings.epochs}", "optim.warmup_epochs=1", f"name={run_name}", f"out_dir={runs}",
                 "eval.online_eval_every=1", f"train.log_every={settings.log_every}",
                 f"device={'cuda' if cuda else 'cpu'}"]
    if settings.workers >= 0:
        overrides.append(f"data.num_workers={settings.workers}")
    if settings.dry:
        overrides += [f"model.width={settings.width}", f"model.proj_hidden_dim={settings.proj_dim}",
                      f"model.proj_output_dim={settings.proj_dim}"]
    code = run_command(part, [*TRAINER, TRAIN_CONFIG, *overrides], logs, settings.limit("train"),
                       poll_gpu_memory=cuda)
    try:
        part.details.update(parse_train(runs / run_name / "metrics.jsonl", Path(part.log), settings.batch))
    except (OSError, ValueError) as err:
        if code == 0:
            part.status, part.reason = "failed", f"the trainer's metrics are unreadable: {err}"
        return
    if code == 0:
        part.status = "passed"


def estimate(part: Part, parts: dict[str, Part], dry: bool) -> None:
    from repro.gpu_check.estimate import (CIFAR10_EPOCH_IMAGES, anchor_rate, estimate_targets, reference_rate,
                                          targets_at)

    # the range every target's estimate has before a measurement; beside the measured one after
    part.details = {"flop_based": targets_at(reference_rate()), "anchor_based": targets_at(anchor_rate())}
    # the trainer's own rate when it ran; else the eager bench's project step
    sources = [("train", parts["train"].details.get("images_per_s")),
               ("bench_eager", parts["bench_eager"].details.get("project_images_per_s"))]
    source, rate = next(((s, r) for s, r in sources if r), (None, None))
    if not rate:
        part.status, part.reason = "skipped", ("no measured rate (the train and bench parts gave none): the "
                                               "FLOP-based and anchor-based range only")
        return
    epoch_s = CIFAR10_EPOCH_IMAGES / rate
    part.details.update({"rate_source": source, "images_per_s": rate, "cifar10_epoch_s": epoch_s,
                         "targets": estimate_targets(epoch_s)})
    part.status = "passed"
    if dry:
        part.reason = "dry mode: a tiny model on the CPU; the arithmetic runs, the numbers say nothing about a GPU"
    elif source == "bench_eager" and parts["bench_eager"].details.get("data") == "synthetic":
        part.reason = "from the step benchmark on synthetic batches (no --data): loader costs of real images not in it"


def resolve_loader(requested: str, optional: dict) -> tuple[str, str]:
    """(loader, note). auto: FFCV when it imports, else torchvision."""
    ffcv = optional.get("ffcv")
    usable = ffcv is not None and not str(ffcv).startswith("broken")
    if requested == "ffcv" and not usable:
        raise UserError(f"--loader ffcv but ffcv does not import ({ffcv or 'not installed'}): "
                        f"use --loader torchvision or run `make setup`")
    if requested == "auto":
        if usable:
            return "ffcv", "FFCV loader (ffcv imports)"
        return "torchvision", (f"ffcv {'is not installed' if ffcv is None else 'does not import (' + ffcv + ')'}: "
                               f"setup skipped, the torchvision loader is used instead of the FFCV path")
    return requested, f"--loader {requested}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=os.environ.get("CIFAR10") or None,
                        help="CIFAR-10 JPEG archive (.tar.gz), its unpacked folder, or a folder holding "
                             "cifar-10-batches-py (default: $CIFAR10; none: the parts that need data are skipped)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="where the summary goes")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; the CUDA parts are skipped")
    parser.add_argument("--loader", choices=("auto", "ffcv", "torchvision"), default="auto")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the train part (default 3; dry 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"minutes for the whole check (default {DEFAULT_BUDGET_MIN:g}; none in dry mode; 0: no "
                             "limit); every command gets at most what is left, one still running then is stopped "
                             "and its part fails, a part with too little left is not started")
    parser.add_argument("--only", default="", help=f"comma-separated parts to run ({', '.join(PARTS)}); "
                        "the environment part always runs")
    args = parser.parse_args(argv)
    only = [p for p in args.only.split(",") if p]
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        raise UserError(f"--only {','.join(unknown)}: unknown part; choose from {', '.join(PARTS)}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: must be >= 1")
    data_path = args.data
    if data_path is not None and not data_path.exists():
        raise UserError(f"--data '{data_path}' does not exist: pass the CIFAR-10 archive or a folder holding it "
                        f"(or no --data: the parts that need none still run)")
    if args.budget is None:
        args.budget = 0.0 if args.dry_run else DEFAULT_BUDGET_MIN
    if args.budget < 0:
        raise UserError(f"--budget {args.budget}: minutes, >= 0 (0: no limit)")
    started = time.perf_counter()
    optional = preflight()
    budget_s = 60 * args.budget if args.budget else math.inf
    settings = Settings.make(args.dry_run, args.epochs, started + budget_s)
    loader, loader_note = resolve_loader(args.loader, optional)
    out = args.out.resolve()
    work, logs = out / "work", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    parts = {name: Part(name, status="pending", reason="not reached: the run ended before this part")
             for name in PARTS}
    data, data_error = None, None
    if data_path:   # before any part: data that is not CIFAR-10 is bad input (one line, nothing written)
        try:
            data = prepare_data(data_path, work / "data", settings.per_class)
        except UserError:
            raise
        except Exception as err:
            data_error = f"data preparation failed: {err}"

    def write_summary(finished: bool = False) -> list[str]:
        """gpu_check.json and gpu_check.md as they stand (atomically: a kill leaves the last whole pair)."""
        failed = [p.name for p in parts.values() if p.status == "failed"]
        summary = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "-m", "repro.gpu_check", *argv]),
            "mode": "dry (CPU, tiny)" if args.dry_run else "full", "finished": finished,
            "data": {"given": str(data_path) if data_path else None, **(data.describe() if data else {})},
            "loader": loader, "loader_note": loader_note, "logs": str(logs),
            "wall_s": round(time.perf_counter() - started, 1),
            "failed": failed, "parts": {name: asdict(p) for name, p in parts.items()},
        }
        write_json(out / "gpu_check.json", summary)
        atomic_write_text(out / "gpu_check.md", render_markdown(summary))
        return failed

    def skip(name: str, reason: str) -> None:
        parts[name].status, parts[name].reason = "skipped", reason
        write_summary()

    def guarded(name: str, fn) -> None:
        if only and name not in only and name != "environment":   # the others depend on what it finds
            return skip(name, "not selected (--only)")
        part = parts[name]
        if name not in ("environment", "estimate") and settings.remaining() < 20:
            part.status, part.reason = "failed", f"not started: the {args.budget:g}-minute budget (--budget) is spent"
            write_summary()
            return
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        part.status, part.reason = "running", "started, not finished: the run was cut off during this part"
        write_summary()
        try:
            part.status, part.reason = "skipped", ""
            fn(part)
        except Exception as err:   # one part's crash is recorded; the others still run
            part.status = "failed"
            part.reason = f"{type(err).__name__}: {err}"
            part.details["traceback"] = traceback.format_exc()
        print(f"gpu-check: {name} {part.status} {part.reason}", file=sys.stderr, flush=True)
        write_summary()

    cuda = False

    def env_part(part):
        nonlocal cuda
        cuda = environment(part, optional, args.dry_run)

    guarded("environment", env_part)
    usable = cuda and not args.dry_run
    no_cuda = f"needs CUDA: {'dry mode runs on the CPU' if args.dry_run else 'no usable CUDA device (see environment)'}"
    no_data = "needs CIFAR-10: no --data or CIFAR10= given"
    if usable:
        guarded("cuda_tests", lambda p: cuda_tests(p, logs, settings, optional))
    else:
        skip("cuda_tests", no_cuda)
    if data_error:
        for name in ("bench_eager", "bench_compile", "train"):
            parts[name].status, parts[name].reason = "failed", data_error
    elif data is None and (args.dry_run or usable):
        data = synthetic_data(work / "data", settings.synthetic)
    if data is not None and (args.dry_run or usable):
        guarded("bench_eager", lambda p: bench(p, logs, settings, data, loader, False))
        if not usable:
            skip("bench_compile", "dry mode: torch.compile on the CPU builds C++ kernels for minutes and measures "
                                  "nothing about a GPU" if args.dry_run else no_cuda)
        elif parts["environment"].details.get("compiler_problem"):
            skip("bench_compile", parts["environment"].details["compiler_problem"])
        else:
            guarded("bench_compile", lambda p: bench(p, logs, settings, data, loader, True))
        if data.kind == "synthetic":
            skip("train", no_data)
        else:
            guarded("train", lambda p: train(p, logs, settings, data, loader, work, usable))
    elif parts["bench_eager"].status == "pending":
        for name in ("bench_eager", "bench_compile", "train"):
            skip(name, no_cuda)
    guarded("estimate", lambda p: estimate(p, parts, args.dry_run))

    failed = write_summary(finished=True)
    print(f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'all parts passed or skipped'}; "
          f"summary in {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return 1 if failed else 0
