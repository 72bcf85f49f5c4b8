import pytest

from repro.config import ConfigError, diff, load_config, parse_overrides, read_yaml, config_from_dict, to_dict
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
