"""The pieces `repro.train.train` is assembled from: the step's module, the metrics window, stop
signals, the compiled forward, the online validation."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from repro import distributed
from repro.checkpoint import atomic_write_text
from repro.cli import UserError
from repro.device import DeviceSetup


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy over labelled samples only (label -1 = unlabelled, e.g. STL-10's 100k extra
    images). Summed then divided by max(count, 1): a batch with no label gives 0, not NaN."""
    labelled = labels >= 0
    count = labelled.sum()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum") / count.clamp(min=1)
    correct = ((logits.argmax(dim=1) == labels) & labelled).sum()
    return loss, correct, count


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


class MetricsWindow:
    """Loss terms summed on the device between two log lines; `flush` reads them back (one host
    sync) after checking, on every rank, that they are finite."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.images = 0          # over all ranks
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """One step's terms (scalars on the device) and its per-rank batch size."""
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.steps += 1
        self.images += batch_size * self.world_size

    def flush(self) -> dict | None:
        """Averages over the window, online training accuracy over its labelled samples and images/s;
        None if any term is non-finite on any rank (a collective: every rank must call it)."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys])
        if not distributed.all_finite(values):
            return None
        totals = dict(zip(keys, values.tolist()))
        record = {k: v / self.steps for k, v in totals.items() if k not in ("correct", "labelled")}
        if totals.get("labelled", 0) > 0:
            record["online_train_top1"] = totals["correct"] / totals["labelled"]
        record["images_per_s"] = self.images / max(time.perf_counter() - self.start, 1e-9)
        self._reset()
        return record


class MetricsLog:
    """metrics.jsonl: one JSON line per record, flushed at once (a crash loses nothing written);
    a no-op on ranks other than 0."""

    def __init__(self, path: Path, enabled: bool = True):
        self.file = open(path, "a") if enabled else None

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.file:
            self.file.close()


class StopSignals:
    """SIGTERM (schedulers' pre-emption), SIGINT (Ctrl-C) and SIGHUP (a closed terminal) set a flag;
    the loop checkpoints at the end of the current step and raises `Preempted`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
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
