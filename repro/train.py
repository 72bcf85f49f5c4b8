"""Self-supervised pretraining, top to bottom.

    python -m repro.train repro/configs/cifar10/frossl.yaml                  # paper recipe
    python -m repro.train repro/configs/cifar10/frossl.yaml optim.epochs=100 name=short
    python -m repro.train repro/configs/demo.yaml device=cpu                 # the CPU demo's training
    torchrun --standalone --nproc_per_node=4 -m repro.train CONFIG           # 4 GPUs (repro/distributed.py)

Re-running the same command resumes from the run folder's last checkpoint (written at every epoch
end, and at the current step on SIGTERM/SIGINT/SIGHUP, after which the command exits 128 + signal);
a finished run is left as it is. Per step: two augmented views, each through the network
separately, the method's loss plus the online linear classifier on detached features, one optimizer
step, the lr from the warmup-cosine schedule. Device, bf16 autocast and channels-last: repro/device.py
(on by default on CUDA; the same code in fp32 on CPU). Metrics (repro/metrics.py): RUN/metrics.jsonl
every `train.log_every` steps (one host sync) and TensorBoard scalars in RUN/tb/ (`make tensorboard`).
The loop comes first in this file, then its parts in the order it uses them.
"""
from __future__ import annotations

import functools
import json
import signal
import sys

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from repro import distributed
from repro.checkpoint import CHECKPOINT, load_checkpoint, prepare_run_dir, save_checkpoint, write_json
from repro.cli import Preempted, StopSignals, UserError, run_cli
from repro.config import Config, load_config, loss_batch_problem
from repro.data import build_loader, num_classes
from repro.device import DeviceSetup
from repro.distributed import env_from_torchrun
from repro.methods import build_method
from repro.optim import build_optimizer, scale_lr, set_lr
from repro.seeds import step_seed
from repro.metrics import TENSORBOARD_DIR, MetricsLog, MetricsWindow, trim_metrics
from repro.spectra import SpectraTracker


DIVERGED = "diverged.json"   # written into the run folder when the loss goes non-finite


class TrainingDiverged(UserError):
    pass


def train(cfg: Config) -> dict:
    env = env_from_torchrun()
    setup = DeviceSetup.from_config(cfg, env)
    if cfg.data.batch_size % env.world_size:
        raise UserError(f"data.batch_size={cfg.data.batch_size} does not divide over {env.world_size} processes: "
                        f"choose a batch size that is a multiple of {env.world_size} (e.g. 224 = 4 x 56)")
    if loss_batch_problem(cfg, env.world_size):
        raise UserError(loss_batch_problem(cfg, env.world_size))
    distributed.init(env, setup.device)
    setup.apply_backend_settings()

    # ---- data ------------------------------------------------------------------------------
    train_loader = build_loader(cfg.data, split=cfg.data.train_split, views="two", shuffle=True, drop_last=True,
                                seed=cfg.seed, subset=cfg.data.subset, device=setup.device,
                                rank=env.rank, world_size=env.world_size)
    val_loader = build_loader(cfg.data, split=cfg.data.eval_split, views="eval", shuffle=False,
                              drop_last=False, seed=cfg.seed, device=setup.device)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError(f"the training set has {len(train_loader.dataset)} images, fewer than one batch of "
                        f"{cfg.data.batch_size}: lower data.batch_size or raise data.subset")
    if env.is_main:
        prepare_run_dir(cfg)  # only once the data is known to be there
    distributed.barrier()
    run_dir, checkpoint_path = cfg.run_dir, cfg.run_dir / CHECKPOINT
    total_steps = cfg.optim.epochs * steps_per_epoch
    schedule = lr_schedule(cfg, steps_per_epoch)

    # ---- model, online classifier, optimizer, resume ---------------------------------------
    method, classifier, optimizer, setup = build_model(cfg, setup, env)
    step = resume(checkpoint_path, method, classifier, optimizer)
    if env.is_main:
        trim_metrics(run_dir / "metrics.jsonl", step)   # step 0 too: an attempt that died before a checkpoint
    if step and env.is_main:
        print(f"resuming {run_dir} at step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f})", file=sys.stderr)
    if step >= total_steps:
        if env.is_main:
            print(f"{run_dir} is complete ({cfg.optim.epochs} epochs); nothing to do", file=sys.stderr)
        return json.loads((run_dir / "pretrain.json").read_text())
    model = pretrainer = Pretrainer(method, classifier)
    if env.distributed:
        # BatchNorm over the global batch keeps every buffer equal on all ranks: no broadcast from rank 0
        # needed (one collective less per step; with it the weights are the same, in fp64 to 1e-13)
        model = nn.parallel.DistributedDataParallel(pretrainer, device_ids=[setup.device.index] if setup.cuda else None,
                                                    broadcast_buffers=bool(cfg.train.loss_batch))
    forward = compile_forward(model, cfg.train.compile)

    def save(epoch_done: int) -> None:
        if env.is_main:
            save_checkpoint(checkpoint_path, {
                "epoch": epoch_done, "step": step, "method": method.state_dict(),
                "classifier": classifier.state_dict(), "optimizer": optimizer.state_dict()})

    def preempted(signum: int) -> Preempted:
        return Preempted(signum, f"\n{signal.Signals(signum).name}: checkpoint at step {step} saved in "
                                 f"{checkpoint_path}; re-run the same command to resume")

    # ---- the loop --------------------------------------------------------------------------
    spectra = (SpectraTracker(method, run_dir, every=cfg.train.spectra_every, start_step=step,
                              steps_per_epoch=steps_per_epoch) if cfg.train.spectra_every and env.is_main else None)
    online_top1 = float("nan")
    pretrainer.train()
    with MetricsLog(run_dir / "metrics.jsonl", enabled=env.is_main, tensorboard_dir=run_dir / TENSORBOARD_DIR,
                    resume_step=step) as metrics, StopSignals() as stop:
        if spectra:
            metrics.follow(spectra.path, "spectra")
        for epoch in range(step // steps_per_epoch, cfg.optim.epochs):
            window = MetricsWindow(env.world_size)
            bar = progress(train_loader, epoch, first_batch=step - epoch * steps_per_epoch, cfg=cfg, show=env.is_main)
            for views, labels in bar:
                views, labels = setup.batch(views, labels)
                lr = schedule(optimizer, step)
                # randomness inside a method (W-MSE): the same on every rank when each loss sees the global batch
                torch.manual_seed(step_seed(cfg.seed, step, env.rank if cfg.train.loss_batch else 0))
                method.set_progress(step, steps_per_epoch, total_steps)   # schedules inside the method
                with setup.autocast():
                    loss, terms = forward(views, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                method.after_backward()   # e.g. frozen prototypes: their gradient is dropped
                optimizer.step()
                method.after_step()       # e.g. momentum encoders follow the online networks
                step += 1
                if spectra:
                    spectra.after_step(step)

                window.add(terms, batch_size=views[0].shape[0])
                end_of_epoch = step % steps_per_epoch == 0
                if step % cfg.train.log_every == 0 or end_of_epoch or stop.signum:
                    record = window.flush()   # a collective: every rank calls it at the same steps
                    if record is None:
                        message = (f"loss became non-finite by step {step} (epoch {epoch + 1}): the last good "
                                   f"checkpoint is kept in {checkpoint_path}; lower optim.lr or check the data")
                        if env.is_main:   # the marker a learning-rate sweep reads (repro/experiments/claims.py)
                            write_json(run_dir / DIVERGED, {"step": step, "message": message})
                        raise TrainingDiverged(message)
                    record.update(step=step, epoch=step / steps_per_epoch, lr=lr)
                    if setup.cuda:   # the highest allocation since the process started, GiB
                        record["peak_memory_gib"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
                    metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}", img_s=f"{record['images_per_s']:.0f}")
                if stop.signum and not end_of_epoch:
                    save(epoch)
                    raise preempted(stop.signum)
            bar.close()

            every = cfg.eval.online_eval_every
            if env.is_main and (epoch + 1 == cfg.optim.epochs or (every and (epoch + 1) % every == 0)):
                online_top1, online_top5 = online_accuracy(method.backbone, classifier, val_loader, setup)
                metrics.write({"epoch": epoch + 1, "step": step, "online_top1": online_top1, "online_top5": online_top5})
                print(f"epoch {epoch + 1}: online linear top-1 {online_top1:.4f}", file=sys.stderr)
            save(epoch + 1)
            if stop.signum:
                raise preempted(stop.signum)
    if spectra:
        spectra.close()

    summary = {"epochs": cfg.optim.epochs, "steps": step, "online_top1": online_top1,
               "method": cfg.method, "dataset": cfg.data.dataset}
    if env.is_main:
        write_json(run_dir / "pretrain.json", summary)
    distributed.barrier()
    return summary


def lr_schedule(cfg: Config, steps_per_epoch: int):
    """`schedule(optimizer, step) -> lr`: warmup-cosine over the run, restarting every
    optim.restart_epochs (SGDR; Figure 4: 15 epochs) when that is > 0."""
    restart_steps = max(1, round(cfg.optim.restart_epochs * steps_per_epoch)) if cfg.optim.restart_epochs > 0 else 0
    return functools.partial(set_lr, total_steps=cfg.optim.epochs * steps_per_epoch,
                             warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
                             warmup_start_lr=cfg.optim.warmup_start_lr, min_lr=cfg.optim.min_lr,
                             restart_steps=restart_steps)


def build_model(cfg: Config, setup: DeviceSetup, env):
    """The method, the online classifier, one optimizer over both (classifier: no weight decay) and the
    device setup for this model (`DeviceSetup.for_model`)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    method = build_method(cfg)
    if env.distributed and (cfg.train.sync_batchnorm or not cfg.train.loss_batch):
        method = distributed.global_batchnorm(method)   # BatchNorm over the global batch
    setup = setup.for_model(method)
    method = setup.module(method)
    classes = num_classes(cfg.data.dataset, cfg.data.root, cfg.data.eval_split)
    classifier = nn.Linear(method.backbone.num_features, classes).to(setup.device)
    groups = method.param_groups() + [{
        "name": "classifier", "params": list(classifier.parameters()), "weight_decay": 0.0,
        "lr": scale_lr(cfg.optim.classifier_lr, cfg.data.batch_size)}]
    optimizer = build_optimizer(cfg.optim.name, groups, lr=scale_lr(cfg.optim.lr, cfg.data.batch_size),
                                weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum, eta=cfg.optim.eta)
    return method, classifier, optimizer, setup


def resume(checkpoint_path, method: nn.Module, classifier: nn.Module, optimizer) -> int:
    """Load the checkpoint if there is one; returns its step (0 for a fresh run). Everything else a
    step depends on is a function of the step (schedules, seeds)."""
    if not checkpoint_path.exists():
        return 0
    state = load_checkpoint(checkpoint_path)
    method.load_state_dict(state["method"])
    classifier.load_state_dict(state["classifier"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"]


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


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy over labelled samples only (label -1 = unlabelled, e.g. STL-10's 100k extra
    images). Summed then divided by max(count, 1): a batch with no label gives 0, not NaN."""
    labelled = labels >= 0
    count = labelled.sum()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum") / count.clamp(min=1)
    correct = ((logits.argmax(dim=1) == labels) & labelled).sum()
    return loss, correct, count


def compile_forward(module: nn.Module, enabled: bool):
    """torch.compile the module's forward. torch compiles lazily, at the first call (and again at a
    recompile), and a forward may change state before a later graph fails to compile (MoCo's
    queue, CorInfoMax's estimates); re-running it eagerly would apply that change twice. So a
    compile failure stops the run with a one-line error instead; the checkpoint on disk predates it."""
    if not enabled:
        return module
    compiled = torch.compile(module)

    def forward(*args):
        try:
            return compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as err:
            first_line = (str(err).strip().splitlines() or [""])[0]
            raise UserError(f"torch.compile failed ({type(err).__name__}: {first_line}); "
                            f"run with train.compile=false to train eagerly") from err

    return forward


def progress(loader, epoch: int, *, first_batch: int, cfg: Config, show: bool):
    """One epoch's batches from `first_batch` on, behind a progress bar (rank 0 only)."""
    return tqdm(loader.epoch(epoch, start_batch=first_batch), total=len(loader), initial=first_batch,
                desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not show, dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


@torch.no_grad()
def online_accuracy(backbone: nn.Module, classifier: nn.Module, loader, setup: DeviceSetup) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of the online classifier on the labelled validation images."""
    backbone.eval()
    correct = torch.zeros((), device=setup.device, dtype=torch.long)
    correct_top5 = torch.zeros((), device=setup.device, dtype=torch.long)
    total = torch.zeros((), device=setup.device, dtype=torch.long)
    for (images,), labels in loader.epoch(0):
        images, labels = setup.images(images), setup.labels(labels)
        with setup.autocast():
            logits = classifier(backbone(images))
        _, batch_correct, batch_count = classifier_loss(logits, labels)
        correct += batch_correct
        total += batch_count
        # label -1 (unlabelled) never equals a class index, so it never counts as correct
        correct_top5 += (logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(dim=1).sum()
    backbone.train()
    return correct.item() / max(total.item(), 1), correct_top5.item() / max(total.item(), 1)


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
