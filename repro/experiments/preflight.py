"""Checks before a target prepares, trains or writes anything; each failure is one UserError line
(exit 2) naming the problem and the fix. Runs whose config or method is not written yet are
MISSING, not errors. The checks of the machine (data present, folders writable, free disk, /dev/shm)
read it through `PROBES`, which tests replace to simulate a full disk or a small /dev/shm."""
from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from repro.cli import UserError
from repro.experiments.options import ROOT, Options
from repro.experiments.plan import RunSpec, missing_reason, registered_methods
from repro.formats.catalog import DATASETS


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
    """Every run's global batch (data.batch_size, overrides included) divides over its processes, and
    each run can train its loss batch there (repro.config.loss_batch_problem)."""
    from repro.config import loss_batch_problem
    configs = [(spec, planned_config(spec, opts)) for spec in specs if spec.config.exists()]   # each read once
    for spec, cfg in configs:
        batch = cfg.data.batch_size
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
    for spec, cfg in configs:   # what the trainer would refuse at its first step (W-MSE's whitening sub-batches)
        problem = loss_batch_problem(cfg, opts.world_size)
        if problem:
            raise UserError(f"run {spec.name}: {problem}; nothing was started")


def check_devices(configs: list, opts: Options) -> None:
    """GPUS is what this machine runs per run: not more than its visible CUDA devices (CUDA present);
    without CUDA (or with device=cpu) GPUS > 1 means that many CPU processes (gloo)."""
    if opts.gpus == 1:
        return   # one process per run fits any machine (importing torch to look would cost seconds)
    on_cpu = bool(configs) and all(cfg.device == "cpu" for cfg in configs)
    if not on_cpu:
        import torch
        if torch.cuda.is_available():
            visible = torch.cuda.device_count()
            if opts.gpus > visible:
                raise UserError(f"GPUS={opts.gpus} but this machine has {visible} visible CUDA device(s): set "
                                f"GPUS={visible} or less (CUDA_VISIBLE_DEVICES limits what is visible)")
            return
    why = "the runs have device=cpu" if on_cpu else "no CUDA device on this machine"
    print(f"# {why}: GPUS={opts.gpus} runs {opts.gpus} CPU processes per run (gloo), not GPUs", flush=True)


def preflight(specs: list[RunSpec], opts: Options) -> list[RunSpec]:
    """Before anything is prepared, trained or written: every planned run's config loads with its
    overrides, its global batch divides by the number of processes; not in --dry-run: its data is
    there or will be downloaded, OUT (and the cache folder, the data folder for a download) is
    writable, the disk holds what the target writes, /dev/shm holds the loaders' batches, GPUS fits
    the visible CUDA devices. `specs`: the whole target's distinct runs (plan.plan_runs). Returns
    the runs that will train (not MISSING)."""
    methods = registered_methods()
    planned = [s for s in specs if not missing_reason(s, methods)]
    configs = [planned_config(spec, opts) for spec in planned]
    check_batch_split(planned, opts)
    if not opts.dry_run and planned:
        downloads = check_data(planned, configs, opts)
        check_folders(opts, downloads)
        check_devices(configs, opts)
        disk = check_disk(planned, configs, opts, downloads)
        shm = check_shm(planned, configs, opts)
        check_rendezvous(opts)   # last: the nodes meet once each has passed its own checks
        print(f"# preflight: {len(planned)} runs; data: " + ("; ".join(f"{d} will be downloaded into {r}"
                                                              for d, (r, _) in downloads.items()) or "present")
              + f"; disk: {disk}; /dev/shm: {shm}", flush=True)
    return planned


# ---- several machines: the nodes meet at MASTER_ADDR:MASTER_PORT -------------------------------

def check_rendezvous(opts: Options) -> None:
    """NNODES > 1: node 0 listens at MASTER_ADDR:MASTER_PORT and every other node connects there, all
    within RDZV_TIMEOUT seconds, or this node stops with one line naming MASTER_ADDR (torchrun's static
    rendezvous would wait its own timeout and fail each run with a traceback). Each run's torchrun gets
    the same timeout (commands.train_command)."""
    if opts.nnodes == 1:
        return
    where = f"MASTER_ADDR={opts.master_addr} MASTER_PORT={opts.master_port}"
    fix = (f"set MASTER_ADDR to the address of the NODE_RANK=0 machine that every node reaches, a MASTER_PORT free "
           f"there and open between the nodes, and start all {opts.nnodes} nodes within RDZV_TIMEOUT={opts.rdzv_timeout} s")
    try:
        family, _, _, _, address = socket.getaddrinfo(opts.master_addr, opts.master_port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(f"{where}: the address does not resolve on node {opts.node_rank} ({err.strerror}): {fix}; nothing was started") from None
    if opts.node_rank == 0:
        problem = _host_rendezvous(family, address, opts.nnodes, opts.rdzv_timeout)
    else:
        problem = _join_rendezvous(family, address, opts.node_rank, opts.rdzv_timeout)
    if problem:
        raise UserError(f"{where}: {problem}: {fix}; nothing was started")


def _host_rendezvous(family, address, nnodes: int, timeout: float) -> str:
    """Node 0: accept nodes 1..nnodes-1 (each sends its rank), then answer each; "" when all came."""
    deadline = time.monotonic() + timeout
    joined: dict[int, socket.socket] = {}
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                return "not an address of this machine, but NODE_RANK=0 runs where MASTER_ADDR points"
            return f"node 0 cannot listen there ({err.strerror})"
        server.listen()
        try:
            while len(joined) < nnodes - 1:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    conn, _ = server.accept()
                    conn.settimeout(5)
                    rank = int(conn.recv(16).decode() or 0)
                except TimeoutError:
                    return f"node 0 waited {timeout:g} s there, {len(joined)} of the {nnodes - 1} other nodes came"
                except (OSError, ValueError):
                    continue   # a dropped or foreign connection
                if 0 < rank < nnodes:
                    joined[rank] = conn
                else:
                    conn.close()
            for conn in joined.values():
                conn.sendall(b"go")
            for conn in joined.values():   # each node closes first: MASTER_PORT is left free for torchrun
                try:
                    conn.recv(1)
                except OSError:
                    pass
        finally:
            for conn in joined.values():
                conn.close()
    return ""


def _join_rendezvous(family, address, rank: int, timeout: float) -> str:
    """Node `rank` > 0: connect to node 0, send the rank, wait for its answer (retrying while nothing
    listens yet); "" once answered."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                sock.connect(address)
                sock.sendall(str(rank).encode())
                if sock.recv(2) == b"go":
                    return ""
            except OSError as err:
                last = err.strerror or str(err)
        if time.monotonic() >= deadline:
            return f"node {rank} found no node 0 there within {timeout:g} s (last attempt: {last})"
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))


@dataclass
class Probes:
    free_bytes: Callable[[Path], int]        # free bytes of the file system holding an existing path
    shm_bytes: Callable[[], int | None]      # available bytes in /dev/shm; None: no /dev/shm
    writable: Callable[[Path], bool]         # an existing folder this process may create files in


def _shm_bytes() -> int | None:
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


PROBES = Probes(free_bytes=lambda path: shutil.disk_usage(path).free, shm_bytes=_shm_bytes,
                writable=lambda path: os.access(path, os.W_OK | os.X_OK))
PREFETCH_BATCHES = 2   # batches in flight per loader worker: torch DataLoader's prefetch_factor default


def existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (what will hold it once created)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


def check_data(planned: list[RunSpec], configs: list, opts: Options) -> dict[str, tuple[Path, int | None]]:
    """Every run's dataset is in its data.root, or the data step will download it. Returns the
    downloads: dataset -> (data folder, bytes it takes: the archive plus its unpacked copy, None
    when the catalog states no archive size)."""
    from repro.experiments.data_steps import ROOT_VARIABLE
    downloads = {}
    overridden = any(o.startswith("data.dataset=") for o in opts.overrides)  # the data step skips those
    for spec, cfg in zip(planned, configs):
        record, root = DATASETS[cfg.data.dataset], Path(cfg.data.root)
        if record.source_folder is None:
            continue   # bundled with a package (the digits)
        needed = [record.source_folder] + ([cfg.data.eval_split] if not record.splits else [])  # image folders
        absent = [folder for folder in needed if not (root / folder).is_dir()]
        if not absent:
            continue
        variable = ROOT_VARIABLE.get(spec.dataset, "DATA_DIR")
        if spec.dataset == "imagenet" or record.download_url is None:
            raise UserError(f"no ImageNet image folder at {root}/{absent[0]} (run {spec.name}; {spec.experiment} reads "
                            f"{root}/{record.source_folder}/<class>/<image> and {root}/{cfg.data.eval_split}/): put it there "
                            f"(docs/data.md) or pass {variable}=<folder with train/ and val/>, or leave out the "
                            f"ImageNet target (make table2 table3 figure3 instead of all); nothing was started"
                            if spec.dataset == "imagenet" else
                            f"no {spec.dataset} at {root}/{absent[0]} (run {spec.name}), and it cannot be downloaded: "
                            f"put it there by hand (docs/data.md) or pass {variable}=...; nothing was started")
        if opts.prepare_data != "auto" or overridden:
            raise UserError(f"no {spec.dataset} at {root}/{record.source_folder} (run {spec.name}) and "
                            f"PREPARE_DATA={opts.prepare_data}{' with data.dataset overridden' if overridden else ''} "
                            f"does not download it: pass {variable}=<folder holding {record.source_folder}>, or "
                            f"PREPARE_DATA=auto to download {record.archive_size or 'it'} from {record.download_url}; "
                            f"nothing was started")
        downloads.setdefault(spec.dataset, (root, record.download_bytes))
    return downloads


def check_folders(opts: Options, downloads: dict) -> None:
    """OUT, the cache folder and every download's data folder can be created and written into."""
    folders = [("OUT", opts.out), ("CACHE_DIR", Path(opts.cache))]
    folders += [("DATA_DIR" if dataset != "imagenet" else "IMAGENET_DIR", root) for dataset, (root, _) in downloads.items()]
    for variable, folder in folders:
        holder = existing(folder)
        if not holder.is_dir():
            raise UserError(f"{variable}={folder}: {holder} is a file, not a folder: choose another {variable}=...; "
                            f"nothing was started")
        if not PROBES.writable(holder):
            what = "downloads go there" if variable.endswith("DATA_DIR") else "it is written to"
            raise UserError(f"{variable}={folder} is not writable ({holder} refuses new files; {what}): choose a "
                            f"writable {variable}=..., or fix its permissions (Docker: mount it without :ro, from a host "
                            f"folder that is yours or chowned to the image's user, or run with --user "
                            f"$(id -u):$(id -g)); nothing was started")


def checkpoint_bytes(cfg) -> int:
    """One checkpoint of a run: the method's state (parameters and buffers, e.g. MoCo's queue), the
    online classifier, and the optimizer's per-parameter state (SGD/LARS momentum: 1 copy of the
    trainable parameters, Adam: 2), counted on torch's meta device (no memory, no computation)."""
    key = repr((cfg.method, cfg.model, cfg.loss, cfg.optim.name, cfg.optim.momentum > 0, cfg.data.dataset))
    if key not in _CHECKPOINT_BYTES:
        import torch
        from repro.methods import build_method
        with torch.device("meta"):
            method = build_method(cfg)
        state = sum(t.numel() * t.element_size() for t in method.state_dict().values())
        trainable = sum(p.numel() * p.element_size() for p in method.parameters() if p.requires_grad)
        classes = DATASETS[cfg.data.dataset].num_classes or 1000   # image folders: ImageNet's 1000
        classifier = (method.backbone.num_features + 1) * classes * 4
        slots = 2 if cfg.optim.name.startswith("adam") else int(cfg.optim.momentum > 0)
        _CHECKPOINT_BYTES[key] = state + classifier + slots * (trainable + classifier)
    return _CHECKPOINT_BYTES[key]


_CHECKPOINT_BYTES: dict[str, int] = {}


def check_disk(planned: list[RunSpec], configs: list, opts: Options, downloads: dict) -> str:
    """Free space on each file system against what the target writes there: a checkpoint per run
    that is not finished, plus one more while a checkpoint is replaced (temporary file, then rename);
    the FFCV files the data steps write (raw pixels, data_steps.planned_data); downloads (archive and
    unpacked copy). Returns one line of the estimate."""
    from repro.experiments.data_steps import planned_data
    from repro.experiments.state import train_state
    sizes = [checkpoint_bytes(cfg) for spec, cfg in zip(planned, configs)
             if train_state(spec, opts) not in ("done", "stopped")]
    needs: list[tuple[str, Path, int]] = []
    if sizes:
        needs.append((f"checkpoints of {len(sizes)} runs", opts.out, sum(sizes) + max(sizes)))
    data = planned_data(planned, opts)
    if data["ffcv_bytes"]:
        needs.append(("FFCV files", Path(opts.cache), data["ffcv_bytes"]))
    unknown = [f"{d} FFCV file (JPEG)" for d in data["ffcv_jpeg"]]
    for dataset, (root, size) in downloads.items():
        if size is None:
            unknown.append(f"{dataset} download")
        else:
            needs.append((f"{dataset} download", root, size))
    by_device: dict[int, list] = {}
    for what, folder, size in needs:
        holder = existing(folder)
        by_device.setdefault(holder.stat().st_dev, []).append((what, folder, holder, size))
    summary = []
    for items in by_device.values():
        total, holder = sum(size for *_, size in items), items[0][2]
        free = PROBES.free_bytes(holder)
        parts = ", ".join(f"{what} {gb(size)} in {folder}" for what, folder, _, size in items)
        if total > free:
            raise UserError(f"not enough disk: this target writes about {gb(total)} ({parts}) on the file system of "
                            f"{holder}, which has {gb(free)} free: free space there, or choose another OUT=/CACHE_DIR= "
                            f"(or a smaller plan: METHODS=, DATASETS=); nothing was started")
        summary.append(f"about {gb(total)} ({parts}), {gb(free)} free")
    return ("; ".join(summary) or "nothing to write") + (f" (not estimated: {', '.join(unknown)})" if unknown else "")


def trains_from_ffcv(cfg, opts: Options) -> bool:
    """The two-view loader will be FFCV's (threads, no shared memory): loader ffcv, or auto with
    ffcv installed and a converter for the dataset (the data step writes the file if absent)."""
    record = DATASETS[cfg.data.dataset]
    return cfg.data.loader == "ffcv" or (cfg.data.loader == "auto" and record.has_converter
                                         and opts.prepare_data == "auto"
                                         and importlib.util.find_spec("ffcv") is not None)


def shm_need(cfg, opts: Options, evaluate: bool = True) -> tuple[int, str]:
    """Shared memory a run's torch DataLoader workers hold at once, and how it was computed: each
    worker keeps PREFETCH_BATCHES batches of float32 images in /dev/shm (processes x workers x
    batches x images per process x views x 3 x side x side x 4 bytes). Training: two views per image
    through the torchvision loader; with FFCV (threads) only rank 0's validation loader (one view)
    uses workers. `evaluate`: the run is probed afterwards (repro.evaluate: one process, batches of
    eval.probe_batch_size, one view: ImageNet's 256 x 224 x 224 images outweigh its training batch of
    56 per GPU). The larger of the two: they run one after the other."""
    workers = cfg.data.workers()
    side = cfg.data.image_size or DATASETS[cfg.data.dataset].image_size
    processes, views = (1, 1) if trains_from_ffcv(cfg, opts) else (opts.gpus, 2)
    loaders = [("training", processes, cfg.data.batch_size // opts.world_size, views)]
    if evaluate:
        loaders.append(("probe", 1, cfg.eval.probe_batch_size, 1))
    return max((procs * workers * PREFETCH_BATCHES * images * n_views * 3 * side * side * 4,
                f"{what}: {procs} processes x {workers} workers x {PREFETCH_BATCHES} batches x {images} images x "
                f"{n_views} views x 3x{side}x{side} float32") for what, procs, images, n_views in loaders)


def check_shm(planned: list[RunSpec], configs: list, opts: Options) -> str:
    """/dev/shm against the largest need of one run (runs train one after another)."""
    available = PROBES.shm_bytes()
    needs = [(*shm_need(cfg, opts, spec.evaluate), spec) for spec, cfg in zip(planned, configs)]
    need, how, spec = max(needs, key=lambda item: item[0])
    if available is None:
        return "no /dev/shm on this system, not checked"
    if need > available:
        suggest = max(1, -(-2 * need // 10**9))   # twice the need, whole GB
        raise UserError(f"/dev/shm has {available / 1e6:.0f} MB free but run {spec.name} needs about {need / 1e6:.0f} MB "
                        f"for its data-loader workers ({how}): in Docker run with --ipc=host or --shm-size={suggest}g "
                        f"(Docker's default is 64 MB); elsewhere free /dev/shm; nothing was started")
    return f"about {need / 1e6:.0f} MB at most ({spec.name}: {how}), {available / 1e6:.0f} MB free"
