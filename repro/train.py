"""Self-supervised pretraining, top to bottom.

    python -m repro.train repro/configs/cifar10/frossl.yaml                  # paper recipe
    python -m repro.train repro/configs/cifar10/frossl.yaml optim.epochs=100 name=short
    python -m repro.train repro/configs/demo.yaml device=cpu                 # the CPU demo's training
    torchrun --standalone --nproc_per_node=4 -m repro.train CONFIG           # 4 GPUs (repro/distributed.py)

Re-running the same command resumes from the run folder's last checkpoint (written at every
epoch end, and at the current step on SIGTERM/SIGINT); a finished run is left as it is. Per step: two augmented views, each through the network separately, the method's
loss plus the online linear classifier on detached features, one optimizer step, the lr set by
the warmup-cosine schedule. bf16 autocast and channels-last on CUDA; the same code in fp32 on CPU.
Metrics accumulate on the device and are read (one host sync) every `train.log_every` steps.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from repro import distributed
from repro.checkpoint import (CHECKPOINT, atomic_write_text, load_checkpoint, prepare_run_dir,
                              save_checkpoint, write_json)
from repro.cli import UserError, run_cli
from repro.config import Config, load_config
from repro.distributed import env_from_torchrun, resolve_device
from repro.data import build_loader, num_classes
from repro.methods import build_method
from repro.models import to_device
from repro.optim import build_optimizer, scale_lr, set_lr
from repro.spectra import SpectraTracker


class TrainingDiverged(UserError):
    pass


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU unless asked for."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy over labelled samples only (label -1 = unlabelled, e.g. STL-10's 100k extra
    images). Summed then divided by max(count, 1): a batch with no label gives 0, not NaN."""
    labelled = labels >= 0
    count = labelled.sum()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum") / count.clamp(min=1)
    correct = ((logits.argmax(dim=1) == labels) & labelled).sum()
    return loss, correct, count


@torch.no_grad()
def online_accuracy(backbone: nn.Module, classifier: nn.Module, loader, device, autocast_ctx,
                    channels_last: bool) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of the online classifier on the labelled validation images."""
    backbone.eval()
    correct = torch.zeros((), device=device, dtype=torch.long)
    correct_top5 = torch.zeros((), device=device, dtype=torch.long)
    total = torch.zeros((), device=device, dtype=torch.long)
    for (images,), labels in loader.epoch(0):
        images = images.to(device, non_blocking=True)
        if channels_last and device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast_ctx:
            logits = classifier(backbone(images))
        _, batch_correct, batch_count = classifier_loss(logits, labels)
        correct += batch_correct
        total += batch_count
        # label -1 (unlabelled) never equals a class index, so it never counts as correct
        correct_top5 += (logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(dim=1).sum()
    backbone.train()
    return correct.item() / max(total.item(), 1), correct_top5.item() / max(total.item(), 1)


class Pretrainer(nn.Module):
    """The method plus the online linear classifier; one forward gives one step's losses.
    (One module, so that DDP synchronises the classifier's gradients too.)"""

    def __init__(self, method: nn.Module, classifier: nn.Module):
        super().__init__()
        self.method = method
        self.classifier = classifier

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor):
        loss, terms, features = self.method(views)
        class_losses, correct, count = [], 0, 0
        for feats in features:  # the online probe sees every view, detached from the backbone
            view_loss, view_correct, view_count = classifier_loss(self.classifier(feats.detach()), labels)
            class_losses.append(view_loss)
            correct, count = correct + view_correct, count + view_count
        class_loss = torch.stack(class_losses).mean()
        return loss + class_loss, {**terms, "class_loss": class_loss.detach(), "correct": correct, "labelled": count}


class StopSignals:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the end of the current step and exits."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(cfg: Config) -> dict:
    env = env_from_torchrun()
    device = resolve_device(cfg.device, env)
    if cfg.data.batch_size % env.world_size:
        raise UserError(f"data.batch_size={cfg.data.batch_size} does not divide over {env.world_size} processes: "
                        f"choose a batch size that is a multiple of {env.world_size} (e.g. 224 = 4 x 56)")
    distributed.init(env, device)
    autocast_ctx = autocast_for(device, cfg.train.precision)
    channels_last = cfg.model.channels_last
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- data ------------------------------------------------------------------------------
    pin = device.type == "cuda"
    train_loader = build_loader(cfg.data, split=cfg.data.train_split, views="two", shuffle=True, drop_last=True,
                                seed=cfg.seed, subset=cfg.data.subset, pin_memory=pin, rank=env.rank,
                                world_size=env.world_size)
    val_loader = build_loader(cfg.data, split=cfg.data.eval_split, views="eval", shuffle=False,
                              drop_last=False, seed=cfg.seed, pin_memory=pin)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError(f"the training set has {len(train_loader.dataset)} images, fewer than one batch of "
                        f"{cfg.data.batch_size}: lower data.batch_size or raise data.subset")
    if env.is_main:
        prepare_run_dir(cfg)  # only once the data is known to be there
    distributed.barrier()
    run_dir = cfg.run_dir
    total_steps = cfg.optim.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    # SGDR cycle length (Figure 4: 15 epochs); at least one step when on, 0 = a single cosine
    restart_steps = (max(1, round(cfg.optim.restart_epochs * steps_per_epoch))
                     if cfg.optim.restart_epochs > 0 else 0)

    # ---- model, online classifier, optimizer ---------------------------------------------
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    method = build_method(cfg)
    if env.distributed and cfg.train.sync_batchnorm:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method = to_device(method, device, channels_last)
    classifier = nn.Linear(method.backbone.num_features,
                           num_classes(cfg.data.dataset, cfg.data.root, cfg.data.eval_split)).to(device)
    pretrainer = Pretrainer(method, classifier)
    groups = method.param_groups() + [{
        "name": "classifier", "params": list(classifier.parameters()), "weight_decay": 0.0,
        "lr": scale_lr(cfg.optim.classifier_lr, cfg.data.batch_size)}]
    optimizer = build_optimizer(cfg.optim.name, groups, lr=scale_lr(cfg.optim.lr, cfg.data.batch_size),
                                weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum,
                                eta=cfg.optim.eta)

    # ---- resume: everything a step depends on is in the checkpoint or a function of the step
    step = 0
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        method.load_state_dict(state["method"])
        classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        if env.is_main:
            trim_metrics(run_dir / "metrics.jsonl", step)
            print(f"resuming {run_dir} at step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f})",
                  file=sys.stderr)
    if step >= total_steps:
        if env.is_main:
            print(f"{run_dir} is complete ({cfg.optim.epochs} epochs); nothing to do", file=sys.stderr)
        return json.loads((run_dir / "pretrain.json").read_text())
    model = pretrainer
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(pretrainer, device_ids=[device.index] if pin else None)
    forward = maybe_compile(model, cfg.train.compile)

    def save(epoch_done: int) -> None:
        if env.is_main:
            save_checkpoint(checkpoint_path, {
                "epoch": epoch_done, "step": step, "method": method.state_dict(),
                "classifier": classifier.state_dict(), "optimizer": optimizer.state_dict()})

    # ---- the loop --------------------------------------------------------------------------
    metrics_file = open(run_dir / "metrics.jsonl", "a") if env.is_main else None
    spectra = (SpectraTracker(method, run_dir, every=cfg.train.spectra_every, start_step=step,
                              steps_per_epoch=steps_per_epoch) if cfg.train.spectra_every and env.is_main else None)
    online_top1 = float("nan")
    pretrainer.train()
    with StopSignals() as stop:
        for epoch in range(step // steps_per_epoch, cfg.optim.epochs):
            sums: dict[str, torch.Tensor] = {}
            window_start, window_images, window_steps = time.perf_counter(), 0, 0
            batches = train_loader.epoch(epoch, start_batch=step - epoch * steps_per_epoch)
            bar = tqdm(batches, total=steps_per_epoch, initial=step - epoch * steps_per_epoch,
                       desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not env.is_main,
                       dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
            for views, labels in bar:
                views = [v.to(device, non_blocking=True) for v in views]
                if channels_last and device.type == "cuda":
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                labels = labels.to(device, non_blocking=True)
                lr = set_lr(optimizer, step, total_steps=total_steps, warmup_steps=warmup_steps,
                            warmup_start_lr=cfg.optim.warmup_start_lr, min_lr=cfg.optim.min_lr,
                            restart_steps=restart_steps)

                # randomness inside a method (e.g. W-MSE's sub-batches): a function of (seed, rank, step)
                torch.manual_seed(cfg.seed * 1_000_003 + step * 1_009 + env.rank)
                method.set_progress(step, steps_per_epoch, total_steps)   # schedules inside the method
                with autocast_ctx:
                    loss, terms = forward(views, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                method.after_backward()   # e.g. frozen prototypes: their gradient is dropped
                optimizer.step()
                method.after_step()       # e.g. momentum encoders follow the online networks
                step += 1
                if spectra:
                    spectra.after_step(step)

                # accumulate on the device; read back only every log_every steps
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0) + value.detach().float()
                window_steps += 1
                window_images += views[0].shape[0] * env.world_size
                end_of_epoch = step % steps_per_epoch == 0
                if step % cfg.train.log_every == 0 or end_of_epoch or stop.received:
                    keys = list(sums)
                    values = torch.stack([sums[k] for k in keys])
                    if not distributed.all_finite(values):
                        raise TrainingDiverged(
                            f"loss became non-finite by step {step} (epoch {epoch + 1}): the last good "
                            f"checkpoint is kept in {checkpoint_path}; lower optim.lr or check the data")
                    record = window_record(dict(zip(keys, values.tolist())), window_steps)
                    record.update(step=step, epoch=step / steps_per_epoch, lr=lr,
                                  images_per_s=window_images / max(time.perf_counter() - window_start, 1e-9))
                    if metrics_file:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}",
                                    img_s=f"{record['images_per_s']:.0f}")
                    sums, window_start, window_images, window_steps = {}, time.perf_counter(), 0, 0
                if stop.received and not end_of_epoch:
                    save(epoch)
                    if env.is_main:
                        print(f"\nsignal {stop.received}: checkpoint at step {step} saved in {checkpoint_path}; "
                              f"re-run the same command to resume", file=sys.stderr)
                    sys.exit(128 + stop.received)
            bar.close()

            last_epoch = epoch + 1 == cfg.optim.epochs
            every = cfg.eval.online_eval_every
            if env.is_main and (last_epoch or (every and (epoch + 1) % every == 0)):
                online_top1, online_top5 = online_accuracy(method.backbone, classifier, val_loader, device,
                                                           autocast_ctx, channels_last)
                metrics_file.write(json.dumps({"epoch": epoch + 1, "step": step, "online_top1": online_top1,
                                               "online_top5": online_top5}) + "\n")
                metrics_file.flush()
                print(f"epoch {epoch + 1}: online linear top-1 {online_top1:.4f}", file=sys.stderr)
            save(epoch + 1)
            if stop.received:
                sys.exit(128 + stop.received)
    if metrics_file:
        metrics_file.close()
    if spectra:
        spectra.close()

    summary = {"epochs": cfg.optim.epochs, "steps": step, "online_top1": online_top1,
               "method": cfg.method, "dataset": cfg.data.dataset}
    if env.is_main:
        write_json(run_dir / "pretrain.json", summary)
    distributed.barrier()
    return summary


def window_record(totals: dict[str, float], steps: int) -> dict:
    """Averages over the logging window; online training accuracy over its labelled samples."""
    record = {k: v / steps for k, v in totals.items() if k not in ("correct", "labelled")}
    if totals.get("labelled", 0) > 0:
        record["online_train_top1"] = totals["correct"] / totals["labelled"]
    return record


def maybe_compile(module: nn.Module, enabled: bool):
    """torch.compile the module's forward; on any compile error fall back to eager (said once)."""
    if not enabled:
        return module
    compiled = torch.compile(module)
    state = {"eager": False}

    def forward(*args):
        if not state["eager"]:
            try:
                return compiled(*args)
            except Exception as err:  # compile failures surface at the first call
                print(f"torch.compile failed ({type(err).__name__}: {err}); running eager", file=sys.stderr)
                state["eager"] = True
        return module(*args)

    return forward


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    config_path, overrides = argv[0], argv[1:]
    try:
        train(load_config(config_path, overrides))
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    run_cli(main)
