"""The plan summary (repro/experiments/plan.py summarize / summary_lines) against the commands a dry
run prints: distinct trainings, probes, GPU-hours from the one estimator, downloads and FFCV bytes
from the dataset catalog. In-process dry runs (nothing trained, nothing written under OUT)."""
import json
import re
from dataclasses import replace

import pytest

from repro.experiments.options import Options
from repro.experiments.plan import plan_runs
from repro.experiments.run import run_target
from repro.experiments.table import ALL, EXPERIMENTS, TABLE2
from repro.experiments.summary import summarize, summary_lines
from repro.experiments.state import planned_epochs
from repro.formats.beton import beton_path
from repro.gpu_check.estimate import REFERENCE_GPU
from tests.conftest import ROOT

# docs/experiments.md "Estimated GPU-hours": 0.43 PFLOP per CIFAR epoch, 35% of 989 TFLOP/s
CIFAR_EPOCH_FLOP, REFERENCE_FLOPS = 0.43e15, 0.35 * 989e12

pytestmark = pytest.mark.skipif(not (ROOT / "repro/configs/cifar10/frossl.yaml").exists(),
                                reason="the CIFAR-10 FroSSL config is not written")


def dry_run(target: str, opts: Options, capsys) -> tuple[list[str], list[str]]:
    """(run names of the train commands, run folders of the evaluate commands) a dry run prints."""
    run_target(EXPERIMENTS[target], replace(opts, dry_run=True))
    out = capsys.readouterr().out
    plan = re.search(r"# plan: \S+: (\d+) distinct training runs \((\d+) new", out)   # printed at the start
    assert plan and out.index("# plan:") < out.index("-m repro.train"), out[:2000]
    assert int(plan.group(2)) == len(set(re.findall(r"-m repro\.train \S+ name=(\S+)", out)))
    trains = re.findall(r"-m repro\.train \S+ name=(\S+)", out)
    probes = re.findall(r"-m repro\.evaluate (\S+)", out)
    return trains, probes


def test_table2_summary_counts_equal_the_printed_commands(tmp_path, capsys):
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"))
    summary = summarize(TABLE2, opts)
    trains, probes = dry_run("table2", opts, capsys)
    assert len(trains) == len(set(trains)) == summary.count("new") == len(summary.states) - summary.count("MISSING")
    assert set(trains) == {n for n, s in summary.states.items() if s == "new"}
    assert len(probes) == summary.probes == summary.probes_todo
    assert not (tmp_path / "runs").exists()          # planning writes nothing


def test_all_counts_each_distinct_run_once(tmp_path, capsys):
    """`make -n all`: every run it prints a train command for is in the summary, counted once
    (Table 2's STL-10 runs are Table 3's and the ablation's too)."""
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"))
    summary = summarize(ALL, opts)
    trains, _ = dry_run("all", opts, capsys)
    assert len(trains) == len(set(trains))                               # each distinct run printed once
    assert set(trains) == {n for n, s in summary.states.items() if s != "MISSING"}
    assert len(summary.states) == len({s.name for s in plan_runs(ALL, opts)})
    parts = [summarize(EXPERIMENTS[p.name], opts) for p in ALL.parts]
    assert len(summary.states) < sum(len(p.states) for p in parts)      # shared runs counted once
    assert summary.hours_total < sum(p.hours_total for p in parts)


def test_a_finished_run_is_counted_done_and_leaves_the_plan(tmp_path, capsys):
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), datasets=("cifar10",),
                   methods=("frossl", "vicreg"))
    specs = plan_runs(TABLE2, opts)
    done = specs[0].run_dir(opts)
    done.mkdir(parents=True)
    (done / "pretrain.json").write_text(json.dumps({"epochs": planned_epochs(specs[0], opts)}))
    summary = summarize(TABLE2, opts)
    assert summary.states == {specs[0].name: "done", specs[1].name: "new"}
    trains, probes = dry_run("table2", opts, capsys)
    assert trains == [specs[1].name] and len(probes) == 2      # the finished run still needs its probe
    # left: one whole run (pretraining + probe) and the finished run's probe only
    one_run = (1000 * CIFAR_EPOCH_FLOP + 100 * CIFAR_EPOCH_FLOP / 6) / REFERENCE_FLOPS / 3600
    probe = 100 * CIFAR_EPOCH_FLOP / 6 / REFERENCE_FLOPS / 3600
    assert summary.hours_total == pytest.approx(2 * one_run)
    assert summary.hours_todo == pytest.approx(one_run + probe)


def test_downloads_and_ffcv_bytes_come_from_the_catalog(tmp_path):
    pytest.importorskip("ffcv")      # FFCV files are planned only when ffcv is installed
    data = tmp_path / "data"
    opts = Options(out=tmp_path / "runs", data_dir=str(data), datasets=("cifar10",), methods=("frossl",))
    summary = summarize(TABLE2, opts)
    assert summary.downloads == [f"cifar10 163 MB from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
                                 f"into {data}"]
    assert summary.ffcv_bytes == 50_000 * 32 * 32 * 3            # raw pixels of the training split
    lines = "\n".join(summary_lines(summary))
    assert "1 distinct training runs (1 new" in lines and REFERENCE_GPU in lines and "not a measurement" in lines
    assert "0.15 GB of FFCV files into" in lines and str(tmp_path / "runs" / "cache") in lines

    (data / "cifar-10-batches-py").mkdir(parents=True)          # source present: nothing to download
    beton = beton_path(data, "cifar10", "train", opts.cache)
    beton.parent.mkdir(parents=True)
    beton.write_bytes(b"x" * 10)
    (beton.parent / (beton.name + ".json")).write_text(json.dumps({"bytes": 10}))   # a finished file
    summary = summarize(TABLE2, opts)
    assert summary.downloads == [] and summary.ffcv_bytes == 0
    assert "downloads: none" in "\n".join(summary_lines(summary))


def test_prepare_data_none_plans_no_download_and_no_file(tmp_path):
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), prepare_data="none")
    summary = summarize(TABLE2, opts)
    assert summary.downloads == [] and summary.ffcv_bytes == 0 and len(summary.states) == 36


def gpu_check_summary(out, mode="full", status="passed", epoch_s=2.0):
    folder = out / "gpu-check"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpu_check.json").write_text(json.dumps({
        "date": "2026-12-01T10:00:00+00:00", "mode": mode,
        "parts": {"environment": {"details": {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}},
                  "estimate": {"status": status, "details": {"cifar10_epoch_s": epoch_s}}}}))


def test_the_plan_shows_the_range_until_gpu_check_measured_a_rate(tmp_path):
    """Before a measurement: FLOP-based to anchor-based GPU-hours; after a full gpu-check run in
    OUT/gpu-check: the hours at its measured CIFAR-10 epoch time, the range beside them."""
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), datasets=("cifar10",), methods=("frossl",))
    # one CIFAR-10 run: 1000 epochs + a probe of 100 forward-only epochs (1/6 of a training epoch each)
    epochs = 1000 + 100 / 6
    summary = summarize(TABLE2, opts)
    assert summary.measured is None
    assert summary.hours_total == pytest.approx(epochs * CIFAR_EPOCH_FLOP / REFERENCE_FLOPS / 3600)
    assert summary.anchor_total == pytest.approx(epochs * 11.9 / 3600)          # the published 11.9 s per epoch
    line = next(l for l in summary_lines(summary) if "GPU-hours" in l)
    assert "0.35-3.4 left (0.35-3.4 for the whole plan)" in line and "11.9 s on one A100" in line
    for mode, status in (("dry (CPU, tiny)", "passed"), ("full", "skipped")):    # nothing measured on a GPU
        gpu_check_summary(opts.out, mode, status)
        assert summarize(TABLE2, opts).measured is None
    gpu_check_summary(opts.out, epoch_s=2.0)
    summary = summarize(TABLE2, opts)
    assert summary.measured["total"] == pytest.approx(epochs * 2.0 / 3600)
    line = next(l for l in summary_lines(summary) if "GPU-hours" in l)
    assert line.startswith("# plan: GPU-hours: 0.56 left (0.56 for the whole plan) on one NVIDIA H100 80GB HBM3")
    assert "a CIFAR-10 epoch in 2.0 s" in line and "before measuring: 0.35-3.4 left" in line
