"""Evaluation pieces on data whose answer is known."""
import subprocess
import sys

import torch

from repro.config import load_config
from repro.evaluate import knn_top1, linear_probe_cached
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
