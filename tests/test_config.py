import dataclasses
import json
import shutil
import subprocess
import sys
import typing

import pytest
import torch

from repro.config import (NON_SEMANTIC, ConfigError, config_from_dict, diff, load_config, parse_overrides, read_yaml,
                          semantic_diff, to_dict)
from repro.method_args import METHOD_ARGS, FroSSLArgs, SwAVArgs, VICRegArgs
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "repro" / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "repro" / "configs")))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.data.batch_size >= 2


def test_overrides_are_typed_and_nested():
    cfg = load_config(ROOT / "repro/configs/cifar10/frossl.yaml",
                      ["optim.lr=0.1", "data.batch_size=128", "eval.probe_milestones=[3,5]", "optim.epochs=7"])
    assert cfg.optim.lr == 0.1 and cfg.data.batch_size == 128
    assert cfg.eval.probe_milestones == (3, 5) and cfg.optim.epochs == 7
    # int accepted where a float is declared
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("data.batch_size=abc", "config key 'data.batch_size'"),
    ("data.batch_size=0", "'data.batch_size' = 0: must be > 0"),
    ("data.batch_size=-4", "'data.batch_size'"),
    ("optim.lr=true", "expected float, got a boolean"),
    ("method=nosuch", "config key 'method' = 'nosuch': choose one of"),
    ("loss.invariance_wieght=2", "loss.invariance_wieght"),
    ("optim.name=rmsprop", "'optim.name'"),
    ("lr0.1", "not key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_round_trip_through_dict_and_diff():
    cfg = load_config(None, ["optim.lr=0.2", "loss.use_logs=false"])
    again = config_from_dict(to_dict(cfg))
    assert again == cfg and diff(cfg, again) == []
    other = load_config(None, ["optim.lr=0.25"])
    changes = diff(cfg, other)
    assert any(c.startswith("optim.lr:") for c in changes)


def test_parse_overrides_builds_a_tree():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")


# ---- the loss section: one typed record per method (repro/method_args.py) --------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "repro" / "configs")))
def test_loss_record_holds_the_yaml_values_and_the_method_defaults_elsewhere(path):
    raw = read_yaml(path)
    cfg = load_config(path)
    args_type = METHOD_ARGS[raw.get("method", "frossl")]
    assert type(cfg.loss) is args_type
    written = raw.get("loss") or {}
    hints = typing.get_type_hints(args_type)
    for f in dataclasses.fields(args_type):
        value = getattr(cfg.loss, f.name)
        assert value == written.get(f.name, f.default), f.name
        assert type(value) is hints[f.name], f"{f.name}: {value!r} is not {hints[f.name].__name__}"
    assert set(written) <= {f.name for f in dataclasses.fields(args_type)}


def test_a_silent_loss_section_gives_the_method_defaults_and_overrides_are_typed():
    assert load_config(None, ["method=swav"]).loss == SwAVArgs()
    cfg = load_config(None, ["method=vicreg", "loss.sim_weight=10"])
    assert cfg.loss == VICRegArgs(sim_weight=10.0) and type(cfg.loss.sim_weight) is float
    assert load_config(None, ["loss.use_logs=false"]).loss == FroSSLArgs(use_logs=False)


@pytest.mark.parametrize("overrides, message", [
    (["method=vicreg", "loss.lambd=0.1"],
     "unknown config key 'loss.lambd' (valid keys in loss for method vicreg: cov_weight, eps, sim_weight, var_weight)"),
    (["method=simsiam", "loss.temperature=0.1"], "unknown config key 'loss.temperature' (valid keys in loss for "
                                                 "method simsiam: none)"),
    (["method=simclr", "loss.temperature=cold"], "config key 'loss.temperature' = 'cold': expected float, got str"),
    (["method=swav", "loss.queue_size=1.5"], "config key 'loss.queue_size' = 1.5: expected int, got float"),
    (["loss.use_logs=3"], "config key 'loss.use_logs' = 3: expected bool, got int"),
    (["loss=3"], "config key 'loss' must be a mapping of FroSSLArgs keys"),
    (["method=nosuch", "loss.use_logs=false"], "config key 'method' = 'nosuch': choose one of"),
])
def test_bad_loss_keys_and_values_are_the_loaders_usual_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_switching_the_method_of_a_config_with_loss_keys_names_the_foreign_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'loss\.invariance_weight' .*method vicreg"):
        load_config(ROOT / "repro/configs/cifar10/frossl.yaml", ["method=vicreg"])


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10"])
def test_each_nologs_config_is_its_frossl_config_without_the_logs(dataset):
    with_logs = load_config(ROOT / "repro/configs" / dataset / "frossl.yaml")
    without = load_config(ROOT / "repro/configs" / dataset / "frossl_nologs.yaml")
    assert semantic_diff(with_logs, without) == ["loss.use_logs: True -> False"]


def test_the_config_loader_imports_neither_the_methods_nor_torch():
    code = ("import sys; import repro.config as c; print('torch' in sys.modules, 'repro.methods' in sys.modules); "
            "c.load_config('repro/configs/cifar10/byol.yaml'); print('repro.methods' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


# ---- one list of non-semantic keys ------------------------------------------------------------------

# a different valid value for every key of NON_SEMANTIC
OTHER_VALUES = {"name": "elsewhere", "out_dir": "/mnt/runs", "data.root": "/mnt/data", "data.download": False,
                "device": "cpu", "data.num_workers": 3, "data.loader": "torchvision", "train.compile": True,
                "train.log_every": 7, "eval.online_eval_every": 5, "eval.probe": "cached",
                "data.cache_dir": "/mnt/cache"}


def test_every_non_semantic_key_exists_and_is_ignored_by_semantic_diff():
    assert set(NON_SEMANTIC) == set(OTHER_VALUES)
    base = load_config(ROOT / "repro/configs/cifar10/frossl.yaml")
    moved = load_config(ROOT / "repro/configs/cifar10/frossl.yaml", [f"{k}={v}" for k, v in OTHER_VALUES.items()])
    assert sorted(line.split(":")[0] for line in diff(base, moved)) == sorted(NON_SEMANTIC)
    assert semantic_diff(base, moved) == []


@pytest.mark.parametrize("override", ["seed=1", "eval.probe_lr=0.1", "eval.knn_k=10", "loss.invariance_weight=1.4",
                                      "data.batch_size=128", "train.spectra_every=5", "method=vicreg"])
def test_semantic_keys_stay_in_semantic_diff(override):
    base, other = load_config(None), load_config(None, [override])
    key = override.split("=")[0]
    assert any(line.startswith(f"{key}: ") for line in semantic_diff(base, other))


def test_a_moved_run_folder_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A run copied to another disk (or its runs/ mounted at another path) continues where it
    stopped: the same weights as a run never interrupted or moved."""
    from repro.train import train
    from tests.conftest import crash_after_first_checkpoint

    tiny = ["model.width=8", "model.proj_hidden_dim=32", "model.proj_output_dim=16", "data.subset=96",
            "data.batch_size=32", "optim.epochs=2", "optim.warmup_epochs=0", "train.log_every=1"]
    straight = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path / 'a'}", *tiny])
    train(straight)
    first = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path / 'b'}", *tiny])
    crash_after_first_checkpoint(first, monkeypatch)
    stopped_at = torch.load(first.run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < stopped_at
    moved = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path / 'disk2' / 'runs'}", *tiny])
    moved.run_dir.parent.mkdir(parents=True)
    shutil.move(first.run_dir, moved.run_dir)
    train(moved)
    steps = [json.loads(line)["step"] for line in (moved.run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 2 * stopped_at + 1))   # each step logged once: continued, not restarted
    a, b = (torch.load(c.run_dir / "checkpoint.pt", weights_only=True) for c in (straight, moved))
    assert a["step"] == b["step"] == 2 * stopped_at
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])


def test_data_workers_resolves_minus_one_to_the_cpu_count_capped_at_8(monkeypatch):
    import os
    from repro.config import DataConfig
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert DataConfig(num_workers=-1).workers() == 2 and DataConfig(num_workers=0).workers() == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert DataConfig(num_workers=-1).workers() == 8 and DataConfig(num_workers=12).workers() == 12
