"""Offline evaluation of a pretrained run: k-NN monitor and linear probe on the frozen backbone.

    python -m repro.evaluate runs/cifar10-frossl                  # the paper's probe (eval.probe)
    python -m repro.evaluate runs/cifar10-frossl --probe cached   # fast variant
    python -m repro.evaluate runs/demo --random-init              # the same encoder, untrained

Linear probe, "full" (the paper's protocol, solo-learn's): a Linear layer on the frozen backbone (eval
mode), 100 epochs of SGD (lr 0.3, momentum 0.9, no weight decay, x0.1 at epochs 60 and 80), batch
256, random-resized-crop + flip; top-1/top-5 on the un-augmented test split. The ImageNet probe
(Figure 4) is Adam (eval.probe_optimizer=adam, lr 5e-3, x0.1 every 10 epochs): the run's eval.* keys.
"cached" (fast, a documented deviation): the same schedule on features of the un-augmented training
images computed once; usually slightly below the full probe. k-NN (monitor): cosine similarity,
k = 200 neighbours weighted by exp(sim / 0.1) (Wu et al. 2018), on un-augmented features.
Results: `<run>/eval_<probe>[_random_init].json`; an evaluation already done for the current
checkpoint is not repeated (--force redoes it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from repro.checkpoint import load_run_checkpoint, load_run_config, write_json
from repro.cli import UserError, run_cli
from repro.data import build_loader, num_classes
from repro.device import DeviceSetup
from repro.methods import build_method


@torch.no_grad()
def extract_features(backbone: nn.Module, loader, setup: DeviceSetup, desc: str = "features"):
    """Backbone features (float32, on CPU) and labels of one pass over `loader`."""
    backbone.eval()
    features, labels = [], []
    for (images,), batch_labels in tqdm(loader.epoch(0), total=len(loader), desc=desc, leave=False):
        with setup.autocast():
            feats = backbone(setup.images(images))
        features.append(feats.float().cpu())
        labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def knn_top1(train_features, train_labels, test_features, test_labels, *, k: int = 200,
             temperature: float = 0.1, chunk: int = 1024) -> float:
    """Weighted k-NN accuracy on cosine similarity (unlabelled train samples, label -1, ignored)."""
    keep = train_labels >= 0
    train_features = F.normalize(train_features[keep], dim=1)
    train_labels = train_labels[keep]
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_labels))
    correct = 0
    for start in range(0, len(test_labels), chunk):
        queries = F.normalize(test_features[start:start + chunk], dim=1)
        similarity, index = (queries @ train_features.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(queries), classes).scatter_add_(1, train_labels[index], weights)
        correct += (votes.argmax(dim=1) == test_labels[start:start + chunk]).sum().item()
    return correct / len(test_labels)


def _topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()


PROBE_OPTIMIZERS = ("sgd", "adam")


def _probe_optimizer(classifier: nn.Module, eval_cfg):
    """eval.probe_optimizer: SGD with momentum (small datasets) or Adam (the ImageNet probe of
    Figure 4), lr x eval.probe_gamma at each of eval.probe_milestones (epochs)."""
    name = eval_cfg.probe_optimizer
    if name == "sgd":
        optimizer = torch.optim.SGD(classifier.parameters(), lr=eval_cfg.probe_lr,
                                    momentum=eval_cfg.probe_momentum, weight_decay=eval_cfg.probe_weight_decay)
    elif name == "adam":
        optimizer = torch.optim.Adam(classifier.parameters(), lr=eval_cfg.probe_lr,
                                     weight_decay=eval_cfg.probe_weight_decay)
    else:
        raise UserError(f"config key 'eval.probe_optimizer' = {name!r}: choose one of {', '.join(PROBE_OPTIMIZERS)}")
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(eval_cfg.probe_milestones),
                                                     gamma=eval_cfg.probe_gamma)
    return optimizer, scheduler


@torch.no_grad()
def _probe_accuracy(classifier: nn.Module, test_features, test_labels) -> tuple[float, float]:
    logits = classifier(test_features)
    n = len(test_labels)
    return (_topk_correct(logits, test_labels, 1).item() / n, _topk_correct(logits, test_labels, 5).item() / n)


def linear_probe_cached(train_features, train_labels, test_features, test_labels, eval_cfg, *,
                        classes: int, seed: int = 0) -> tuple[float, float]:
    """Linear probe on fixed features (the fast variant). Returns (top-1, top-5) on the test set."""
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    torch.manual_seed(seed)
    classifier = nn.Linear(train_features.shape[1], classes)
    optimizer, scheduler = _probe_optimizer(classifier, eval_cfg)
    generator = torch.Generator().manual_seed(seed)
    batch = eval_cfg.probe_batch_size
    for _ in tqdm(range(eval_cfg.probe_epochs), desc="linear probe (cached)", leave=False):
        order = torch.randperm(len(train_labels), generator=generator)
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(classifier(train_features[index]), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return _probe_accuracy(classifier, test_features, test_labels)


def linear_probe_full(backbone: nn.Module, cfg, setup: DeviceSetup, test_features, test_labels, *,
                      classes: int) -> tuple[float, float]:
    """The paper's probe: augmented training images through the frozen backbone every epoch."""
    loader = build_loader(cfg.data, split="train", views="probe", shuffle=True, drop_last=False,
                          seed=cfg.seed, batch_size=cfg.eval.probe_batch_size, subset=cfg.data.subset,
                          device=setup.device)
    torch.manual_seed(cfg.seed)
    classifier = nn.Linear(backbone.num_features, classes).to(setup.device)
    optimizer, scheduler = _probe_optimizer(classifier, cfg.eval)
    backbone.eval()
    for epoch in tqdm(range(cfg.eval.probe_epochs), desc="linear probe", leave=False):
        for (images,), labels in loader.epoch(epoch):
            labels = setup.labels(labels)
            keep = labels >= 0
            with torch.no_grad(), setup.autocast():
                feats = backbone(setup.images(images))
            loss = F.cross_entropy(classifier(feats.float()[keep]), labels[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return _probe_accuracy(classifier.cpu(), test_features, test_labels)


def load_backbone(run_dir: Path, cfg, setup: DeviceSetup, *, random_init: bool) -> tuple[nn.Module, int]:
    """The run's backbone at its last checkpoint (or at its initialisation), and that epoch."""
    torch.manual_seed(cfg.seed)  # the same initialisation the training started from
    method = build_method(cfg)
    epoch = 0
    if not random_init:
        state = load_run_checkpoint(run_dir)
        method.load_state_dict(state["method"])
        epoch = state["epoch"]
    return setup.module(method.backbone), epoch


def evaluate_run(run_dir: str | Path, *, probe: str | None = None, random_init: bool = False,
                 force: bool = False, device_name: str | None = None) -> dict:
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    probe = probe or cfg.eval.probe
    if probe not in ("full", "cached"):
        raise UserError(f"--probe {probe!r}: choose full or cached")
    out_path = run_dir / f"eval_{probe}{'_random_init' if random_init else ''}.json"
    setup = DeviceSetup.from_config(cfg, device=device_name)
    backbone, epoch = load_backbone(run_dir, cfg, setup, random_init=random_init)
    if out_path.exists() and not force:
        previous = json.loads(out_path.read_text())
        if previous.get("checkpoint_epoch") == epoch:
            print(f"{out_path} is up to date (epoch {epoch}); --force redoes it", file=sys.stderr)
            return previous

    classes = num_classes(cfg.data.dataset, cfg.data.root, "train")
    feature_loader = build_loader(cfg.data, split="train", views="eval", shuffle=False, drop_last=False,
                                  seed=cfg.seed, batch_size=cfg.eval.probe_batch_size, subset=cfg.data.subset,
                                  device=setup.device)
    test_loader = build_loader(cfg.data, split=cfg.data.eval_split, views="eval", shuffle=False,
                               drop_last=False, seed=cfg.seed, batch_size=cfg.eval.probe_batch_size,
                               device=setup.device)
    train_features, train_labels = extract_features(backbone, feature_loader, setup, "train features")
    test_features, test_labels = extract_features(backbone, test_loader, setup, "test features")
    knn = knn_top1(train_features, train_labels, test_features, test_labels, k=cfg.eval.knn_k,
                   temperature=cfg.eval.knn_temperature)
    if probe == "cached":
        top1, top5 = linear_probe_cached(train_features, train_labels, test_features, test_labels, cfg.eval,
                                         classes=classes, seed=cfg.seed)
    else:
        top1, top5 = linear_probe_full(backbone, cfg, setup, test_features, test_labels,
                                       classes=classes)
    result = {"method": cfg.method, "dataset": cfg.data.dataset, "probe": probe, "random_init": random_init,
              "checkpoint_epoch": epoch, "epochs": cfg.optim.epochs, "probe_epochs": cfg.eval.probe_epochs,
              "linear_top1": top1, "linear_top5": top5, "knn_top1": knn}
    write_json(out_path, result)
    print(f"{run_dir.name}: linear top-1 {top1:.4f}, top-5 {top5:.4f}, k-NN top-1 {knn:.4f} "
          f"({probe} probe{', random init' if random_init else ''}) -> {out_path}", file=sys.stderr)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder written by repro.train")
    parser.add_argument("--probe", choices=("full", "cached"), help="default: the run's eval.probe")
    parser.add_argument("--random-init", action="store_true", help="evaluate the encoder at its initialisation")
    parser.add_argument("--force", action="store_true", help="redo an evaluation that is up to date")
    parser.add_argument("--device", help="override the run's device (cpu, cuda, ...)")
    args = parser.parse_args(argv)
    evaluate_run(args.run_dir, probe=args.probe, random_init=args.random_init, force=args.force,
                 device_name=args.device)
    return 0


if __name__ == "__main__":
    run_cli(main)
