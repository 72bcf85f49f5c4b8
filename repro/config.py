"""Experiment configuration: one YAML per experiment -> a frozen, typed dataclass.

    cfg = load_config("repro/configs/cifar10/frossl.yaml", ["optim.lr=0.1", "data.batch_size=128"])

Every key is checked: an unknown key or a value of the wrong type is a `ConfigError` whose message
names the key and says what is allowed. Overrides are `section.key=value` (YAML syntax for the
value); top-level keys (`name`, `method`, `seed`, ...) take no section. The `loss:` section is
read into the hyper-parameter record of the run's `method` (repro/method_args.py). The resolved
config is saved in the run folder (`config.yaml`) and compared on resume with `semantic_diff`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.cli import UserError
from repro.formats.augmentations import AUGMENTATION_SETS
from repro.formats.catalog import DATASETS
from repro.method_args import METHOD_ARGS, FroSSLArgs, LossArgs


class ConfigError(UserError):
    pass


class YamlLoader(yaml.SafeLoader):
    """YAML with 1.2's floats: `1e-4` is a number (YAML 1.1, PyYAML's default, reads it as text)."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                 list("-+0123456789."))


def read_yaml_text(text: str):
    return yaml.load(text, Loader=YamlLoader)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"          # cifar10 | cifar100 | stl10 | imagefolder | digits
    root: str = "data"                # folder holding the dataset (DATA_DIR in the Makefile)
    train_split: str = "train"        # stl10 pretraining uses "train+unlabeled"
    eval_split: str = "test"
    augmentations: str = "symmetric"  # named set in repro.formats.augmentations (docs/sources.md section 3)
    image_size: int = 0               # 0: the dataset's native size (32 CIFAR, 96 STL-10, 224 ImageNet)
    batch_size: int = 256             # global batch (all ranks together)
    num_workers: int = -1             # -1: min(8, cpu count)
    subset: int = 0                   # >0: use only the first N training images (quick runs, tests)
    download: bool = True             # try torchvision's download when the files are absent
    loader: str = "auto"              # two-view data: auto (FFCV if <root>/ffcv/<dataset>_<split>.beton exists) | ffcv | torchvision
    cache_dir: str = ""               # derived files (FFCV) in <cache_dir>/ffcv/, looked for before <root>/ffcv/;
                                      # "": next to the data. Lets data.root be a read-only mount

    def workers(self) -> int:
        """num_workers with -1 resolved: min(8, this machine's CPU count)."""
        return min(8, os.cpu_count() or 1) if self.num_workers < 0 else self.num_workers


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    width: int = 64                   # base width of the ResNet (64 = standard ResNet18)
    cifar_stem: bool = True           # 3x3 stride-1 conv1, no max-pool (solo-learn's CIFAR stem)
    in_channels: int = 3
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 1024
    pred_hidden_dim: int = 0          # predictor hidden width (BYOL 4096, SimSiam 512); unused by other methods
    channels_last: bool | str = "auto"  # "auto": CUDA and CPU (CPU: not below width 16, repro/device.py); true: every device; false: never


@dataclass(frozen=True)
class OptimConfig:
    name: str = "lars"                # lars | sgd | adam
    epochs: int = 1000
    lr: float = 0.3                   # per 256 images: scaled by batch_size / 256
    weight_decay: float = 1e-6
    momentum: float = 0.9
    eta: float = 0.02                 # LARS trust coefficient
    classifier_lr: float = 0.1        # online linear classifier, scaled like lr
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 3e-5     # not scaled by batch size
    min_lr: float = 0.0               # not scaled by batch size
    restart_epochs: float = 0.0       # >0: the cosine restarts every N epochs (SGDR, T_mult 1; Figure 4: 15)


@dataclass(frozen=True)
class EvalConfig:
    probe: str = "full"               # full: the paper's augmented probe | cached: fast, on cached features
    probe_epochs: int = 100
    probe_lr: float = 0.3
    probe_momentum: float = 0.9
    probe_weight_decay: float = 0.0
    probe_milestones: tuple[int, ...] = (60, 80)
    probe_gamma: float = 0.1          # the probe lr is multiplied by this at each milestone
    probe_optimizer: str = "sgd"      # sgd (small datasets) | adam (ImageNet, Figure 4; probe_momentum unused)
    probe_batch_size: int = 256
    knn_k: int = 200
    knn_temperature: float = 0.1
    online_eval_every: int = 1        # epochs between online-classifier/k-NN validations (0: only at the end)


@dataclass(frozen=True)
class TrainConfig:
    precision: str = "auto"           # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    log_every: int = 50               # optimizer steps between metric lines (one host sync each)
    compile: bool = False             # torch.compile the model (a compile failure stops the run with a one-line error)
    sync_batchnorm: bool = False      # distributed, loss_batch > 0: BatchNorm statistics over the global batch
    loss_batch: int = 0               # samples each loss sees, part of the run's identity (loss_batch_problem):
                                      # 0: the global batch data.batch_size, for any number of processes (they
                                      # gather embeddings and synchronise BatchNorm); N > 0: each process's own
                                      # slice of N = data.batch_size / processes (ImageNet: 224 over 4 GPUs = 56)
    spectra_every: int = 0            # >0: top-14 eigenvalues of view-1 embeddings every N steps -> spectra.jsonl (repro/spectra.py, Figure 3)


@dataclass(frozen=True)
class Config:
    name: str = "run"                 # run folder name under out_dir
    method: str = "frossl"
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossArgs = field(default_factory=FroSSLArgs)   # the record METHOD_ARGS[method] (repro/method_args.py)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotated type `tp`; int is accepted for float, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        for option in options:
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' = {value!r}: expected {tp}")
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a list of {_type_name(item_type)}")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a mapping")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # name=2024: YAML reads digits as a number
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}' = {value!r}: expected {tp.__name__}, got a boolean")
    if not isinstance(value, tp):
        raise ConfigError(
            f"config key '{key}' = {value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, values: dict, prefix: str = "", where: str = "") -> Any:
    """`cls(**values)` with every key and value checked; `prefix` is the section ('data.'),
    `where` qualifies the section in messages ('for method vicreg')."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            section = f" in {prefix[:-1]}" if prefix else ""
            raise ConfigError(
                f"unknown config key '{full}' (valid keys{section}{' ' + where if where else ''}: "
                f"{', '.join(sorted(fields)) or 'none'})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' must be a mapping of {tp.__name__} keys")
            kwargs[key] = _build(tp, value, prefix=f"{full}.")
        else:
            kwargs[key] = _coerce(full, value, tp)
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict:
    """['optim.lr=0.1', 'method=vicreg'] -> {'optim': {'lr': 0.1}, 'method': 'vicreg'}."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (example: optim.lr=0.1)")
        key, raw = item.split("=", 1)
        try:
            value = read_yaml_text(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': value is not valid YAML ({err.problem})") from None
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return tree


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values: dict) -> Config:
    values = dict(values)
    loss = values.pop("loss", {})
    cfg = _build(Config, values)
    # the loss section's keys depend on the method: check the method first, then read the section
    # into that method's record with the same loader
    _choice("method", cfg.method, tuple(METHOD_ARGS))
    args_type = METHOD_ARGS[cfg.method]
    if not isinstance(loss, dict):
        raise ConfigError(f"config key 'loss' must be a mapping of {args_type.__name__} keys "
                          f"(method {cfg.method})")
    cfg = dataclasses.replace(cfg, loss=_build(args_type, loss, prefix="loss.", where=f"for method {cfg.method}"))
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found (configs live in repro/configs/)")
    try:
        values = read_yaml_text(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys")
    return values


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when path is None) and apply key=value overrides."""
    values = read_yaml(path) if path is not None else {}
    return config_from_dict(_merge(values, parse_overrides(list(overrides))))


def to_dict(cfg: Config) -> dict:
    values = dataclasses.asdict(cfg)
    values["eval"]["probe_milestones"] = list(cfg.eval.probe_milestones)
    return values


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def diff(a: Config, b: Config) -> list[str]:
    """Keys whose values differ, as 'key: a -> b' strings (a key only one side has: None there)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out
    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


# Config keys that do not change what a run computes. The rule: a key is non-semantic when it
# only says where the run and its data live (name, out_dir, data.root, data.cache_dir, data.download), on what and
# through which pipeline the same recipe executes (device, data.num_workers, data.loader: FFCV and
# torchvision draw the same augmentations, docs/data.md; train.compile), how often progress is
# reported (train.log_every, eval.online_eval_every), or which probe `repro.evaluate` runs by
# default (eval.probe: each probe writes its own eval_<probe>.json). Every other key, the seed and
# the probe's own settings included, can change a number the run reports, so it is semantic.
# Used on resume (repro/checkpoint.py: a moved or re-mounted run folder resumes) and by the planner.
NON_SEMANTIC: tuple[str, ...] = (
    "name", "out_dir", "data.root", "data.cache_dir", "data.download", "device", "data.num_workers", "data.loader",
    "train.compile", "train.log_every", "eval.online_eval_every", "eval.probe")


def semantic_diff(a: Config, b: Config) -> list[str]:
    """`diff(a, b)` without the NON_SEMANTIC keys: empty when a and b are the same experiment."""
    return [line for line in diff(a, b) if line.split(":", 1)[0] not in NON_SEMANTIC]


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' = {value!r}: choose one of {', '.join(choices)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config key '{key}' = {value!r}: must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: Config) -> None:
    """Value checks that the types cannot express; each names the key and the allowed values."""
    _choice("method", cfg.method, tuple(METHOD_ARGS))
    _choice("data.dataset", cfg.data.dataset, tuple(DATASETS))
    _choice("data.augmentations", cfg.data.augmentations, tuple(AUGMENTATION_SETS))
    _choice("data.loader", cfg.data.loader, ("auto", "ffcv", "torchvision"))
    _choice("optim.name", cfg.optim.name, ("lars", "sgd", "adam"))
    _choice("eval.probe", cfg.eval.probe, ("full", "cached"))
    _choice("eval.probe_optimizer", cfg.eval.probe_optimizer, ("sgd", "adam"))
    _choice("train.precision", cfg.train.precision, ("auto", "fp32", "bf16"))
    _choice("model.backbone", cfg.model.backbone, ("resnet18",))
    if isinstance(cfg.model.channels_last, str):
        _choice("model.channels_last", cfg.model.channels_last, ("auto",))
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"config key 'device' = {cfg.device!r}: choose auto, cpu, cuda or cuda:N")
    for key, value in [("data.batch_size", cfg.data.batch_size), ("optim.epochs", cfg.optim.epochs),
                       ("optim.lr", cfg.optim.lr), ("model.width", cfg.model.width),
                       ("model.in_channels", cfg.model.in_channels),
                       ("model.proj_hidden_dim", cfg.model.proj_hidden_dim),
                       ("model.proj_output_dim", cfg.model.proj_output_dim),
                       ("eval.probe_batch_size", cfg.eval.probe_batch_size), ("eval.probe_gamma", cfg.eval.probe_gamma),
                       ("eval.knn_k", cfg.eval.knn_k), ("train.log_every", cfg.train.log_every)]:
        _positive(key, value)
    for key, value in [("data.subset", cfg.data.subset), ("data.image_size", cfg.data.image_size),
                       ("optim.weight_decay", cfg.optim.weight_decay),
                       ("optim.warmup_epochs", cfg.optim.warmup_epochs),
                       ("optim.restart_epochs", cfg.optim.restart_epochs),
                       ("eval.probe_epochs", cfg.eval.probe_epochs),
                       ("eval.online_eval_every", cfg.eval.online_eval_every),
                       ("train.spectra_every", cfg.train.spectra_every)]:
        _positive(key, value, allow_zero=True)
    _positive("train.loss_batch", cfg.train.loss_batch, allow_zero=True)
    if cfg.data.batch_size < 2:
        raise ConfigError("config key 'data.batch_size' must be >= 2 (SSL losses compare samples in a batch)")
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"config key 'name' = {cfg.name!r}: must be a non-empty folder name without '/'")


def loss_samples(cfg: Config) -> int:
    """The samples each loss sees: train.loss_batch, or the global batch when that is 0."""
    return cfg.train.loss_batch or cfg.data.batch_size


def loss_batch_problem(cfg: Config, world_size: int) -> str:
    """Why `cfg` cannot train as `world_size` processes ("" when it can), naming the fix: a per-process
    loss batch (train.loss_batch > 0) must be data.batch_size / processes, and W-MSE's loss batch must
    split into whitening sub-batches. The trainer and the make targets' preflight both ask."""
    batch, loss_batch = cfg.data.batch_size, cfg.train.loss_batch
    if loss_batch and batch != loss_batch * world_size:
        fits = f"GPUS x NNODES = {batch // loss_batch}" if batch % loss_batch == 0 else "no number of processes"
        return (f"train.loss_batch={loss_batch} (the samples each process's loss sees) needs data.batch_size={batch} "
                f"split over {fits}, not {world_size}: run with that, or set train.loss_batch={batch // world_size} "
                f"(a different loss batch: NOT-COMPARABLE), or train.loss_batch=0 (the loss over the global batch)")
    whitening = getattr(cfg.loss, "whitening_size", 0)
    if cfg.method == "wmse" and loss_samples(cfg) % whitening:
        return (f"W-MSE whitens sub-batches of loss.whitening_size={whitening}, but each loss sees "
                f"{loss_samples(cfg)} samples: set train.loss_batch=0 (the global batch of {batch}) or a "
                f"loss.whitening_size dividing {loss_samples(cfg)}")
    return ""
