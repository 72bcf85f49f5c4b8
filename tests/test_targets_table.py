"""The table of experiments (repro/experiments/table.py) and the planner that reads it: every
record points at a transcription and a collector, a new record is planned and run (dry) by the
same code as the paper's, `all` plans each shared run once, and comparability ignores only the
non-semantic keys."""
from dataclasses import replace

import pytest

from repro.cli import UserError
from repro.expected import EXPECTED_DIR
from repro.experiments.experiment import Experiment, Runs
from repro.experiments.options import Options
from repro.experiments.plan import narrow, plan_runs, run_spec, specs_for
from repro.experiments.table import ALL, COLLECTABLE, EXPERIMENTS, FIGURE3, FIGURE4, TABLE2, TABLE3
from tests.conftest import ROOT


def test_every_record_has_its_transcription_and_collector():
    for exp in EXPERIMENTS.values():
        if exp.parts:
            assert all(EXPERIMENTS[p.name] is p for p in exp.parts)
            continue
        for name in exp.result_names:
            assert (EXPECTED_DIR / f"{name}.yaml").exists(), (exp.name, name)
            assert name in COLLECTABLE, (exp.name, name)
        assert bool(exp.runs) == bool(exp.rows) == bool(exp.datasets), exp.name
        assert exp.runs is not None or exp.script is not None, exp.name


NEW = Experiment("figure9", "a record added in a test", rows=("frossl", "vicreg"), datasets=("cifar10", "stl10"),
                 runs=Runs(prefix="figure9-", overrides=("optim.lr=0.1", "train.spectra_every={spectra_every}"),
                           per_dataset={"stl10": ("eval.online_eval_every=1",)}),
                 stop_at_epoch=7, evaluate=False, results=(TABLE2,))


def test_a_new_record_is_planned_from_its_fields_alone():
    opts = Options(methods=("frossl",), seeds=(0, 1), spectra_every=4)
    specs = specs_for(NEW, opts)
    assert [s.name for s in specs] == ["figure9-cifar10-frossl-seed0", "figure9-cifar10-frossl-seed1",
                                       "figure9-stl10-frossl-seed0", "figure9-stl10-frossl-seed1"]
    stl10 = specs[2]
    assert stl10.reference == stl10.standard == ["optim.lr=0.1", "train.spectra_every=4", "eval.online_eval_every=1"]
    assert stl10.stop_at_epoch == 7 and not stl10.evaluate and stl10.config == ROOT / "repro/configs/stl10/frossl.yaml"
    assert specs[0].reference == ["optim.lr=0.1", "train.spectra_every=4"]
    # EPOCHS: its own folders, the epochs in the run but not in the reference, no stop at epoch 7
    short = specs_for(NEW, replace(opts, epochs=3, seeds=(0,)))[0]
    assert short.name == "figure9-cifar10-frossl-seed0-e3" and short.standard[-1] == "optim.epochs=3"
    assert "optim.epochs=3" not in short.reference and short.stop_at_epoch is None
    with pytest.raises(UserError, match="METHODS byol not in this experiment"):
        specs_for(NEW, replace(opts, methods=("byol",)))
    with pytest.raises(UserError, match="DATASETS imagenet not in this experiment"):
        specs_for(NEW, replace(opts, datasets=("imagenet",)))


def test_a_new_record_runs_through_the_same_target_code(tmp_path, capsys):
    from repro.experiments.run import run_target
    if not (ROOT / "repro/configs/cifar10/frossl.yaml").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")
    opts = Options(out=tmp_path, methods=("frossl",), datasets=("cifar10",), dry_run=True, prepare_data="none")
    assert run_target(NEW, opts) == 0
    lines = capsys.readouterr().out.splitlines()
    train = [ln for ln in lines if "-m repro.train" in ln]
    assert len(train) == 1 and "repro/configs/cifar10/frossl.yaml name=figure9-cifar10-frossl-seed0 " in train[0]
    assert train[0].endswith("optim.lr=0.1 train.spectra_every=10")
    assert not any("repro.evaluate" in ln for ln in lines)                 # evaluate=False
    check = next(ln for ln in lines if "-m repro.check" in ln)
    assert "--only table2" in check and "--save-as check_figure9" in check and "--rows frossl" in check
    assert not tmp_path.joinpath("results").exists()


def test_variants_profiles_and_own_runner_are_read_from_the_record(monkeypatch, tmp_path):
    """A new record says itself that VARIANT applies to it, which PROFILE plans another record,
    and which runner runs it: the command line dispatches on these fields, not on its name."""
    from repro.experiments import cli
    from repro.experiments.variants import rows_for
    if not (ROOT / "repro/configs/cifar10/frossl_authors.yaml").exists():
        pytest.skip("repro/configs/cifar10/frossl_authors.yaml not written")
    record = replace(NEW, rows=("frossl", "vicreg"), datasets=("cifar10",), variants=True)
    assert rows_for(record, "authors") == ("frossl_authors", "vicreg")
    assert rows_for(replace(record, variants=False), "authors") == ("frossl", "vicreg")
    ran = []
    other = replace(record, title="under PROFILE=claims", profiles=("claims",),
                    runner=lambda exp, opts: ran.append((exp.title, exp.rows, opts.methods)) or 7)
    record = replace(record, profile_records={"claims": other}, runner=lambda exp, opts: ran.append(exp.title) or 5)
    monkeypatch.setitem(cli.EXPERIMENTS, "figure9", record)
    assert cli.main(["figure9", "--out", str(tmp_path), "--dry-run"]) == 5
    assert cli.main(["figure9", "--out", str(tmp_path), "--profile", "claims", "--variant", "authors",
                     "--methods", "frossl"]) == 7
    assert ran == ["a record added in a test", ("under PROFILE=claims", ("frossl_authors", "vicreg"),
                                                ("frossl_authors",))]


def test_all_plans_each_shared_run_once():
    """Table 3's runs are Table 2's STL-10 runs: `all` plans them once (42 distinct runs for seed 0:
    36 of Table 2, 4 of Figure 3, 2 of Figure 4), whichever part planned them first."""
    opts = Options()
    names = [s.name for s in plan_runs(ALL, opts)]
    table2 = {s.name for s in specs_for(TABLE2, opts)}
    table3 = {s.name for s in specs_for(TABLE3, opts)}
    assert len(names) == len(set(names)) == 36 + 4 + 2
    assert table3 < table2 and table2 <= set(names)
    assert {s.name for s in specs_for(FIGURE3, opts)} | {s.name for s in specs_for(FIGURE4, opts)} <= set(names)
    assert len(plan_runs(ALL, replace(opts, seeds=(0, 1)))) == 2 * 42


def test_a_union_narrows_methods_datasets_and_profile_per_part():
    assert narrow(FIGURE3, Options(profile="claims")) is None                      # paper setting only
    assert narrow(TABLE2, Options(datasets=("imagenet",))) is None                 # no ImageNet column
    assert narrow(FIGURE4, Options(methods=("vicreg",))) is None
    part = narrow(FIGURE3, Options(methods=("vicreg", "byol"), datasets=("stl10", "cifar10")))
    assert part.methods == ("vicreg",) and part.datasets == ()                    # Figure 3's dataset is fixed
    part = narrow(TABLE2, Options(methods=("frossl",), datasets=("stl10", "imagenet")))
    assert part.methods == ("frossl",) and part.datasets == ("stl10",)


def test_comparable_ignores_non_semantic_keys_and_the_runs_own_seed(tmp_path):
    from repro.config import load_config, save_config
    from repro.experiments.collect import comparable
    if not (ROOT / "repro/configs/cifar10/frossl.yaml").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")

    def saved(opts, *extra):
        spec = run_spec(TABLE2, opts, "frossl", "cifar10", opts.seeds[0])
        spec.run_dir(opts).mkdir(parents=True, exist_ok=True)
        save_config(load_config(spec.config, [*spec.overrides(opts), *extra]), spec.run_dir(opts) / "config.yaml")
        return spec

    opts = Options(out=tmp_path, seeds=(1,))
    assert comparable(saved(opts, "data.num_workers=3", "device=cpu", "train.log_every=7"), opts) == (True, "")
    ok, reason = comparable(saved(opts, "optim.lr=0.5"), opts)
    assert not ok and reason.startswith("differs from the paper setting: optim.lr: ")
    epochs = replace(opts, epochs=5)
    ok, reason = comparable(saved(epochs, "optim.lr=0.5"), epochs)
    assert not ok and reason.startswith("differs from the paper setting: optim.epochs: ") and "also optim.lr" in reason
