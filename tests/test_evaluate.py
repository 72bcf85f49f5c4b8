"""Evaluation pieces on data whose answer is known."""
import dataclasses
import subprocess
import sys

import pytest
import torch

from repro.cli import UserError
from repro.config import ConfigError, load_config
from repro.evaluate import _probe_optimizer, knn_top1, linear_probe_cached
from tests.conftest import ROOT


def test_knn_follows_the_weighted_vote_of_the_nearest_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, -1])  # the unlabelled sample is ignored
    test = torch.tensor([[0.95, 0.05], [0.05, 0.95], [-1.0, 0.05]])
    # k=1: nearest labelled neighbour by cosine; the third query's nearest labelled one is class 1
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 1]), k=1) == 1.0
    assert knn_top1(train, labels, test, torch.tensor([0, 1, 0]), k=1) == 2 / 3
    # k=4 with a sharp temperature still follows the closest votes
    assert knn_top1(train, labels, test[:2], torch.tensor([0, 1]), k=4, temperature=0.01) == 1.0


def test_cached_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 4
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=g)
    eval_cfg = load_config(None, ["eval.probe_epochs=20", "eval.probe_milestones=[12,16]",
                                  "eval.probe_batch_size=64"]).eval
    top1, top5 = linear_probe_cached(features[:300], labels[:300], features[300:], labels[300:], eval_cfg,
                                     classes=4)
    assert top1 > 0.95 and top5 == 1.0
    noise = torch.randn(400, 16, generator=g)
    top1, _ = linear_probe_cached(noise[:300], labels[:300], noise[300:], labels[300:], eval_cfg, classes=4)
    assert top1 < 0.5


def test_evaluating_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "repro.evaluate", str(tmp_path)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a run folder" in lines[0]


IMAGENET_PROBE = ["eval.probe_optimizer=adam", "eval.probe_lr=5.0e-3", "eval.probe_weight_decay=0.0",
                  "eval.probe_milestones=[10,20,30,40,50,60,70,80,90]", "eval.probe_gamma=0.1"]


def _one_probe_step(eval_cfg, weight, grad):
    classifier = torch.nn.Linear(2, 1, bias=False, dtype=torch.float64)
    classifier.weight.data.copy_(weight)
    optimizer, scheduler = _probe_optimizer(classifier, eval_cfg)
    classifier.weight.grad = grad.clone()
    optimizer.step()
    return optimizer, scheduler, classifier.weight.data


def test_probe_optimizer_adam_when_asked_and_sgd_by_default():
    weight = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    grad = torch.tensor([[0.5, -4.0]], dtype=torch.float64)
    adam_cfg = load_config(None, IMAGENET_PROBE).eval
    optimizer, scheduler, after = _one_probe_step(adam_cfg, weight, grad)
    assert type(optimizer) is torch.optim.Adam
    # Adam's first step, written out: m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected -> g / (|g| + eps)
    expected = weight - 5e-3 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-12)
    # the step schedule: x0.1 after every 10 epochs
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == lrs[9] == 5e-3 and lrs[10] == pytest.approx(5e-4) and lrs[99] == pytest.approx(5e-12)

    sgd_cfg = load_config(None).eval
    assert sgd_cfg.probe_optimizer == "sgd" and sgd_cfg.probe_gamma == 0.1
    optimizer, _, after = _one_probe_step(sgd_cfg, weight, grad)
    assert type(optimizer) is torch.optim.SGD
    torch.testing.assert_close(after, weight - 0.3 * grad, rtol=0, atol=1e-12)   # momentum buffer = g at step 1


def test_cached_probe_with_adam_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 4
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=g)
    eval_cfg = load_config(None, [*IMAGENET_PROBE, "eval.probe_epochs=20", "eval.probe_batch_size=64"]).eval
    top1, top5 = linear_probe_cached(features[:300], labels[:300], features[300:], labels[300:], eval_cfg,
                                     classes=4)
    assert top1 > 0.95 and top5 == 1.0


def test_unknown_probe_optimizer_is_an_error_naming_the_key_and_choices():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["eval.probe_optimizer=lbfgs"])
    message = str(err.value)
    assert "eval.probe_optimizer" in message and "lbfgs" in message and "sgd" in message and "adam" in message
    # a config that skipped validation (built by hand) is refused by the probe too
    eval_cfg = dataclasses.replace(load_config(None).eval, probe_optimizer="lbfgs")
    with pytest.raises(UserError) as err:
        _probe_optimizer(torch.nn.Linear(2, 2), eval_cfg)
    message = str(err.value)
    assert "\n" not in message and "eval.probe_optimizer" in message and "sgd, adam" in message
