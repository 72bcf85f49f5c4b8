"""The CPU claims profile (`make claims`, docs/claims.md) and VARIANT=authors: the planned runs,
the margin rule on constructed result files, the recorded references' provenance, and a tiny end
to end run on real CIFAR-10 images."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import repro.experiments as experiments_package
from repro.check import run_check
from repro.experiments.claims import record_claims
from repro.experiments.options import Options
from repro.experiments.table import CLAIMS_RANDOM_INIT_ROW
from tests.conftest import ROOT, SHARED_CIFAR

ROWS = ("frossl", "barlow_twins", "vicreg", "simclr", "frossl_nologs")
# the documented schedule (docs/claims.md), written out here rather than read from table.py
SCHEDULE = ("data.subset=4096", "data.batch_size=128", "model.width=8", "optim.name=lars", "optim.lr=0.2",
            "optim.epochs=3", "optim.warmup_epochs=1.5", "eval.online_eval_every=1", "train.spectra_every=5",
            "data.dataset=imagefolder", "data.image_size=32")


def make(*args, timeout=120):
    env = {**os.environ, "MAKEFLAGS": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(["make", "--no-print-directory", *args, "SETUP=true"], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def trained(stdout: str) -> list[str]:
    """Run names of the printed `repro.train` lines."""
    return [next(a.split("=", 1)[1] for a in line.split() if a.startswith("name="))
            for line in stdout.splitlines() if " -m repro.train " in line]


@pytest.mark.parametrize("profile, seeds", [("", (0, 1, 2)), ("claims-quick", (0,))])
def test_make_n_claims_plans_the_documented_runs(tmp_path, profile, seeds):
    args = ["-n", "claims", f"OUT={tmp_path}"] + ([f"PROFILE={profile}"] if profile else [])
    result = make(*args)
    assert result.returncode == 0, result.stderr
    runs = trained(result.stdout)
    assert sorted(runs) == sorted(f"claims-cifar10-{r}-seed{s}" for r in ROWS for s in seeds)
    for line in (x for x in result.stdout.splitlines() if " -m repro.train " in x):
        assert all(o in line.split() for o in SCHEDULE), line
    random_init = [x for x in result.stdout.splitlines() if "--random-init" in x]
    assert len(random_init) == len(seeds) and all("claims-cifar10-frossl-seed" in x for x in random_init)
    assert f"--profile {profile or 'claims'}" in result.stdout.splitlines()[-1]
    assert not list(tmp_path.iterdir())   # planned, nothing written


def test_claims_seeds_from_the_command_line_win(tmp_path):
    result = make("-n", "claims", f"OUT={tmp_path}", "SEEDS=4")
    assert result.returncode == 0, result.stderr
    assert sorted(trained(result.stdout)) == sorted(f"claims-cifar10-{r}-seed4" for r in ROWS)


def test_claims_rejects_another_profile(tmp_path):
    result = make("-n", "claims", f"OUT={tmp_path}", "PROFILE=short")
    assert result.returncode != 0 and "error: make claims PROFILE=short" in result.stderr


def test_make_n_table2_variant_authors(tmp_path):
    result = make("-n", "table2", f"OUT={tmp_path}", "VARIANT=authors")
    assert result.returncode == 0, result.stderr
    runs = trained(result.stdout)
    for dataset in ("cifar10", "cifar100", "stl10"):
        assert f"{dataset}-frossl_authors-seed0" in runs
        assert f"{dataset}-frossl-seed0" not in runs          # replaced, not added
        assert f"{dataset}-simclr-seed0" in runs              # other rows unchanged
    train_lines = [x for x in result.stdout.splitlines() if "name=cifar10-frossl_authors-seed0" in x]
    assert train_lines and "repro/configs/cifar10/frossl_authors.yaml" in train_lines[0]
    assert "--variant VARIANT=authors" in result.stdout.splitlines()[-1]
    paper = make("-n", "table2", f"OUT={tmp_path}")
    assert "cifar10-frossl-seed0" in trained(paper.stdout) and "frossl_authors" not in paper.stdout


def test_variant_authors_cells_are_labelled(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    cell = {"value": 92.5, "comparable": True, "reason": "", "n": 1, "std": None,
            "runs": ["runs/cifar10-frossl_authors-seed0"]}
    (results / "table2-authors.json").write_text(json.dumps(
        {"experiment": "table2", "profile": "paper", "variant": "VARIANT=authors",
         "cells": {"cifar10/frossl": cell}, "row_variants": {"frossl": "frossl_authors"}}))
    rows = [r for r in run_check(results, only=["table2"], variant="VARIANT=authors",
                                 rows={"frossl_authors"}) if r.measured is not None]
    assert [(r.experiment, r.cell, r.paper, r.status) for r in rows] == \
        [("table2[VARIANT=authors]", "cifar10/frossl", 92.8, "PASS")]


# ---- the margin rule on constructed result files --------------------------------------------------

def cell(value, std=None, n=3):
    return {"value": value, "comparable": True, "reason": "", "n": n, "std": std, "runs": []}


def claims_result(results: Path, cells: dict, profile: str = "claims") -> None:
    results.mkdir(exist_ok=True)
    stem = "claims" if profile == "claims" else "claims-quick"
    (results / f"{stem}.json").write_text(json.dumps(
        {"experiment": "claims", "profile": profile, "variant": "", "created": "2026-11-30T16:00:00+00:00",
         "command": "python -m repro.experiments claims", "environment": {"torch": "2.14.1"},
         "cells": cells}))


def claim_rows(results: Path, profile: str = "claims") -> dict:
    return {r.cell: r for r in run_check(results, only=["claims"], profile=profile) if r.paper == "claim"}


def test_margin_rule_pass_fail_not_decided(tmp_path):
    claims_result(tmp_path, {
        # vs Barlow Twins: 6 points ahead with stds 1 + 1: PASS on both comparisons
        "online_top1_epoch3/frossl": cell(40.0, 1.0), "online_top1_epoch3/barlow_twins": cell(34.0, 1.0),
        "probe_top1/frossl": cell(45.0, 0.5), "probe_top1/barlow_twins": cell(39.0, 0.5),
        # vs VICReg: 4 points behind on the probe, spread 1: FAIL
        "online_top1_epoch3/vicreg": cell(38.0, 0.5), "probe_top1/vicreg": cell(49.0, 0.5),
        # vs SimCLR: 2 points ahead but stds 2 + 2: not decided
        "online_top1_epoch3/simclr": cell(38.0, 2.0), "probe_top1/simclr": cell(43.0, 2.0)})
    rows = claim_rows(tmp_path)
    assert rows["early_learning_vs_barlow_twins"].status == "PASS"
    assert rows["early_learning_vs_vicreg"].status == "FAIL"
    simclr = rows["early_learning_vs_simclr"]
    assert simclr.status == "NOT-DECIDED" and simclr.measured == "not decided (spread too large)"
    assert rows["logs_matter"].status == "MISSING"   # no frossl_nologs cells


def test_margin_rule_floor_applies_with_one_seed(tmp_path):
    # one seed (no std): the floor of 1.0 point decides; 0.5 ahead is not decided, 3 ahead passes
    claims_result(tmp_path, {"probe_top1/frossl": cell(30.0, None, 1), "probe_top1/random_init": cell(27.0, None, 1),
                             "online_top1_epoch3/frossl": cell(30.0, None, 1),
                             "online_top1_epoch3/frossl_nologs": cell(29.5, None, 1),
                             "probe_top1/frossl_nologs": cell(29.5, None, 1)}, profile="claims-quick")
    rows = claim_rows(tmp_path, "claims-quick")
    assert rows["beats_random_init"].status == "PASS"
    assert rows["logs_matter"].status == "NOT-DECIDED"


def test_claims_without_results_are_not_listed_as_passing(tmp_path):
    assert all(r.status != "PASS" for r in run_check(tmp_path, only=["claims"]))


# ---- recorded references: the project's command writes them ------------------------------------------

def test_record_writes_provenance_and_spread_tolerances(tmp_path, monkeypatch):
    expected = tmp_path / "expected"
    shutil.copytree(ROOT / "expected_results", expected)
    monkeypatch.setattr(experiments_package, "EXPECTED_DIR", expected)
    results = tmp_path / "results"
    claims_result(results, {"probe_top1/frossl": cell(40.0, 2.0), "probe_top1/random_init": cell(30.0, 0.01),
                            "entropy/frossl": {**cell(2.0, 0.1), "comparable": False}})
    out = record_claims(Options(out=tmp_path, profile="claims"))
    assert out == expected / "claims" / "claims.yaml"
    text = out.read_text()
    assert "recorded by `python -m repro.experiments record claims --profile claims`" in text
    recorded = yaml.safe_load(text)["cells"]
    assert set(recorded) == {"probe_top1/frossl", "probe_top1/random_init"}   # comparable cells only
    assert recorded["probe_top1/frossl"]["command"] == "make claims PROFILE=claims"
    assert recorded["probe_top1/frossl"]["date"] == "2026-11-30"
    assert recorded["probe_top1/frossl"]["tolerance"] == 6.0        # 3 x std 2.0
    assert recorded["probe_top1/random_init"]["tolerance"] == 1.5   # 5% of 30 beats 3 x 0.01
    # a later run is checked against them, apart from the claims
    claims_result(results, {"probe_top1/frossl": cell(35.0, 2.0), "probe_top1/random_init": cell(30.5, 0.1)})
    rows = {r.cell: r for r in run_check(results, expected_dir=expected, only=["claims"], profile="claims")}
    assert rows["probe_top1/random_init"].status == "PASS" and rows["probe_top1/frossl"].status == "PASS"
    claims_result(results, {"probe_top1/frossl": cell(33.0, 2.0)})
    rows = {r.cell: r for r in run_check(results, expected_dir=expected, only=["claims"], profile="claims")}
    assert rows["probe_top1/frossl"].status == "FAIL"


def test_a_one_seed_reference_takes_the_three_seed_spread(tmp_path):
    # claims-quick's references have one seed (tolerance: the 5% / 0.5 floor); a run on another machine
    # differs like another seed, so the check widens each to the claims profile's tolerance for the cell
    expected = tmp_path / "expected"
    shutil.copytree(ROOT / "expected_results", expected)
    for profile, std in (("claims", 2.0), ("claims-quick", None)):
        (expected / profile / "claims.yaml").write_text(yaml.safe_dump({"experiment": "claims", "profile": profile,
            "cells": {"probe_top1/frossl": {"value": 30.0, "tolerance": 6.0 if std else 1.5, "std": std, "n": 3 if std else 1},
                      "probe_top1/simclr": {"value": 30.0, "tolerance": 1.5, "std": None, "n": 1}}}))
    results = tmp_path / "results"
    claims_result(results, {"probe_top1/frossl": cell(34.0, None, 1), "probe_top1/simclr": cell(34.0, None, 1)},
                  profile="claims-quick")
    rows = {r.cell: r for r in run_check(results, expected_dir=expected, only=["claims"], profile="claims-quick")}
    assert rows["probe_top1/frossl"].status == "PASS" and "claims profile's seed spread" in rows["probe_top1/frossl"].note
    assert rows["probe_top1/simclr"].status == "FAIL"      # its 3-seed tolerance is no wider: the floor holds
    claims_result(results, {"probe_top1/frossl": cell(37.0, None, 1)}, profile="claims-quick")
    rows = {r.cell: r for r in run_check(results, expected_dir=expected, only=["claims"], profile="claims-quick")}
    assert rows["probe_top1/frossl"].status == "FAIL"      # 7 points off: beyond the 3-seed tolerance too


@pytest.mark.parametrize("profile", ["claims", "claims-quick"])
def test_committed_references_carry_the_recording_commands_provenance(profile):
    """expected_results/<profile>/claims.yaml as `record claims` writes it: every cell names the make
    command, the machine, date and commit, its runs (one per seed of its row), and the tolerance
    the spread gives; a value typed in by hand would lack them or disagree."""
    import re

    from repro.experiments.claims import reference_tolerance
    recorded = yaml.safe_load((ROOT / "expected_results" / profile / "claims.yaml").read_text())
    assert (recorded["experiment"], recorded["profile"]) == ("claims", profile)
    seeds = {"claims": 3, "claims-quick": 1}[profile]
    assert recorded["cells"]
    for name, cell in recorded["cells"].items():
        row = name.split("/")[1]
        assert cell["command"] == f"make claims PROFILE={profile}", name
        assert re.fullmatch(r"[0-9a-f]{40}", cell["commit"]) and cell["hardware"] and cell["date"], name
        # from the unrounded value and std: equal up to the rounding of the stored numbers
        assert cell["tolerance"] == pytest.approx(reference_tolerance(cell["value"], cell["std"]), abs=2e-3), name
        stem = CLAIMS_RANDOM_INIT_ROW if row == "random_init" else row
        assert cell["runs"] == [f"runs/claims-cifar10-{stem}-seed{s}" for s in range(cell["n"])], name
        assert cell["n"] == seeds and (cell["std"] is None) == (seeds == 1), name


def test_record_without_a_result_is_a_user_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "repro.experiments", "record", "claims", "--profile", "claims-quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: record needs a collected claims result")


# ---- a tiny end-to-end claims run on real CIFAR-10 images ---------------------------------------------

TINY = ("data.subset=64 data.batch_size=32 data.num_workers=0 device=cpu optim.epochs=2 "
        "eval.probe_epochs=3 eval.knn_k=5 train.spectra_every=1 train.log_every=1 model.proj_hidden_dim=64 "
        "model.proj_output_dim=32")


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="needs ../shared/data/cifar10-jpeg.tar.gz (development machines)")
def test_tiny_claims_end_to_end(tmp_path):
    from repro.gpu_check.data import unpack_archive
    images = unpack_archive(SHARED_CIFAR, tmp_path / "cifar", {"train": 8, "test": 4})
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "repro.experiments", "claims", "--out", str(out), "--cifar10", str(images),
               "--data-dir", str(tmp_path / "data"), "--methods", "frossl,barlow_twins", "--profile", "claims-quick",
               "--overrides", TINY]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    collected = json.loads(next((out / "results").glob("claims-quick*.json")).read_text())
    cells = collected["cells"]
    for row in ("frossl", "barlow_twins", "random_init"):
        assert 0 <= cells[f"probe_top1/{row}"]["value"] <= 100
    assert {"online_top1_epoch2/frossl", "entropy/frossl", "entropy_epoch1/barlow_twins"} <= set(cells)
    assert not cells["probe_top1/frossl"]["comparable"]      # OVERRIDES: not the claims schedule
    check = (out / "results" / "check_claims.txt").read_text()
    assert "early_learning_vs_barlow_twins" in check


def test_report_section_shows_rows_with_spread_random_init_and_unfinished_runs(tmp_path):
    from repro.report import render
    claims_result(tmp_path, {"probe_top1/frossl": cell(40.0, 1.0), "probe_top1/random_init": cell(30.0, 0.2)})
    result = json.loads((tmp_path / "claims.json").read_text())
    result.update(seeds=[0, 1, 2], unfinished={"vicreg": ["claims-cifar10-vicreg-seed1"]})
    (tmp_path / "claims.json").write_text(json.dumps(result))
    section = render.section("claims", tmp_path)
    html = str(getattr(section, "data", section))
    assert "40.00 ± 1.00" in html and "30.00 ± 0.20" in html and "random initialisation" in html
    assert "claims-cifar10-vicreg-seed1" in html
