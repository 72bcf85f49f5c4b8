"""The compiled training step (backbone, projector, FroSSL loss, online classifier) traces as one
graph: no graph breaks, so no host synchronisation hides in the step."""
import torch
from torch import nn

from repro.config import load_config
from repro.methods import build_method
from repro.train import Pretrainer


def test_training_forward_has_zero_graph_breaks():
    cfg = load_config(None, ["model.width=8", "model.proj_hidden_dim=64", "model.proj_output_dim=32"])
    method = build_method(cfg)
    step = Pretrainer(method, nn.Linear(method.backbone.num_features, 10))
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    labels = torch.tensor([0, 1, 2, 3, -1, -1, 6, 7])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(views, labels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
