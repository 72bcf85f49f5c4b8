"""The paper-experiment Make targets: `make -n` names the runs each would launch (torchrun when
GPUS > 1) and runs nothing; a tiny end-to-end target writes results that `make check` reads and
`make report` renders to HTML."""
import json
import os
import subprocess
from dataclasses import replace

import pytest

from repro.experiments.plan import config_path
from repro.experiments.table import ABLATION, FIGURE3, FIGURE4, TABLE2, TABLE3
from tests.conftest import ROOT, SHARED_CIFAR

TARGETS = ["figure2", "table2", "table3", "ablation", "figure3", "figure4", "all"]
# a digits-sized model: the tiny end-to-end runs take seconds on a CPU
TINY = ("data.dataset=digits data.train_split=train data.augmentations=digits model.in_channels=1 "
        "model.cifar_stem=true model.width=8 model.proj_hidden_dim=32 model.proj_output_dim=16 "
        "data.batch_size=64 data.num_workers=0 device=cpu eval.probe_epochs=2 optim.warmup_epochs=0 "
        "eval.knn_k=5 train.log_every=5")


def make(*args, timeout=300):
    # one OpenMP thread per process: the tiny model's two threads on two cores shared with other
    # processes wait on each other (seconds per step instead of milliseconds; tests/test_targets_e2e.py)
    env = {**os.environ, "MAKEFLAGS": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(["make", "--no-print-directory", *args, "SETUP=true"], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def expected_runs(target):
    """(run name, config) pairs a target launches, as the planner names them."""
    if target == "table2":
        return [(f"{d}-{r}-seed0", config_path(d, r)) for d in TABLE2.datasets for r in TABLE2.rows]
    if target == "table3":
        return [(f"stl10-{r}-seed0", config_path("stl10", r)) for r in TABLE3.rows]
    if target == "ablation":
        return [(f"{d}-{r}-seed0", config_path(d, r)) for d in TABLE2.datasets for r in ABLATION.rows]
    if target == "figure3":
        return [(f"figure3-stl10-{r}-seed0", config_path("stl10", r)) for r in FIGURE3.rows]
    if target == "figure4":
        return [(f"imagenet-{r}-seed0", config_path("imagenet", r)) for r in FIGURE4.rows]
    return []


@pytest.mark.parametrize("target", TARGETS)
def test_make_n_names_the_runs_and_runs_nothing(target, tmp_path):
    out = tmp_path / "runs"
    result = make("-n", target, f"OUT={out}", "GPUS=2")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "--dry-run" in text and not out.exists()          # nothing trained, nothing written
    runs = [r for t in (TARGETS[:-1] if target == "all" else [target]) for r in expected_runs(t)]
    for name, config in runs:
        # on 2 processes ImageNet's 56 per GPU cannot stay the paper's: it trains 224 / 2 = 112 per
        # process in its own folder; every other run gathers its loss over the global batch, unchanged
        if name.startswith("imagenet-"):
            name += "-lb112"
        if config.exists():  # written: the train command with torchrun for GPUS=2
            line = next((ln for ln in text.splitlines() if f"name={name} " in ln and "repro.train" in ln), None)
            assert line is not None, f"{target}: no train command for {name}\n{text}"
            assert "torchrun" in line and "--nproc_per_node=2" in line and str(config.relative_to(ROOT)) in line
        else:  # not written yet: named as MISSING, not an error
            assert f"({name}): MISSING" in text, f"{target}: {name} neither planned nor MISSING\n{text}"
    if target == "figure2":
        assert "repro.linear_regime" in text
    if target != "all":
        assert "repro.check" in text


def test_make_n_single_gpu_uses_plain_python(tmp_path):
    result = make("-n", "table2", f"OUT={tmp_path}", "METHODS=frossl", "DATASETS=cifar10")
    line = next(ln for ln in result.stdout.splitlines() if "repro.train" in ln)
    assert "torchrun" not in line and "name=cifar10-frossl-seed0 " in line


def test_make_n_figure4_refuses_a_gpu_count_that_does_not_split_224(tmp_path):
    if not config_path("imagenet", "frossl").exists():
        pytest.skip("repro/configs/imagenet/frossl.yaml not written yet")
    result = make("-n", "figure4", f"OUT={tmp_path}", "GPUS=3")
    assert result.returncode != 0 and "does not divide" in result.stderr


def test_tiny_end_to_end_target_check_and_report(tmp_path):
    """table2 (FroSSL, 'CIFAR-10' cell) and table3 on the digits for a few steps: results ->
    `make check` (NOT-COMPARABLE, exit 0) -> `make report` (HTML)."""
    out = tmp_path / "runs"
    # 256 of the digits: 4 steps per epoch (what is tested is the chain of targets, not learning)
    common = [f"OUT={out}", "PREPARE_DATA=none", "METHODS=frossl", f"OVERRIDES={TINY} data.subset=256"]
    table2 = make("table2", "DATASETS=cifar10", "EPOCHS=1", "PROBE=cached", *common)
    assert table2.returncode == 0, table2.stdout[-3000:] + table2.stderr[-3000:]
    assert "NOT-COMPARABLE" in table2.stdout
    results = sorted(p.name for p in (out / "results").glob("table2*.json"))
    assert results == ["table2-e1-x" + results[0].split("-x")[1]], results
    result = json.loads((out / "results" / results[0]).read_text())
    cell = result["cells"]["cifar10/frossl"]
    assert 0 < cell["value"] <= 100 and cell["comparable"] is False and "optim.epochs" in cell["reason"]
    # re-running skips what is done
    again = make("table2", "DATASETS=cifar10", "EPOCHS=1", "PROBE=cached", *common)
    assert "trained (done), skipped" in again.stdout and "evaluated, skipped" in again.stdout
    table3 = make("table3", "EPOCHS=3", *common)
    assert table3.returncode == 0, table3.stdout[-3000:] + table3.stderr[-3000:]
    assert "epoch3/frossl" in table3.stdout

    check = make("check", f"OUT={out}")
    assert check.returncode == 0, check.stdout + check.stderr
    rows = [line.split() for line in check.stdout.splitlines()]
    assert any(r[:2] == ["table2[EPOCHS=1,", "OVERRIDES#" + results[0].split("-x")[1][:6] + "]"]
               and r[-1] == "NOT-COMPARABLE" for r in rows if len(r) > 3), check.stdout
    assert any(r[0] == "table2" and r[1] == "cifar10/frossl" and r[-1] == "MISSING" for r in rows if len(r) > 3)
    assert (out / "results" / "check.txt").exists() and (out / "results" / "check.json").exists()

    report = make("report", f"OUT={out}", timeout=600)
    assert report.returncode == 0, report.stdout + report.stderr
    html = (out / "results" / "report.html").read_text()
    assert "FroSSL reproduction report" in html and "NOT-COMPARABLE" in html and "Not measured yet" in html
    assert "Traceback" not in html and "Environment" in html


@pytest.mark.needs_data
@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason=f"real CIFAR-10 not available at {SHARED_CIFAR}")
@pytest.mark.slow
def test_make_figure2_end_to_end(tmp_path):
    """`make figure2` on the real CIFAR-10 archive: PASS in the check, the PNG in the results."""
    out = tmp_path / "runs"
    result = make("figure2", f"OUT={out}", f"CIFAR10={SHARED_CIFAR}", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "eq8_saturates_first" in result.stdout and "PASS" in result.stdout
    assert (out / "results" / "figure2.png").exists()
    report = make("report", f"OUT={out}", timeout=600)
    assert report.returncode == 0 and "eq. 8 saturates at" in (out / "results" / "report.html").read_text()


def test_gpu_count_must_divide_the_global_batch(tmp_path):
    from repro.cli import UserError
    from repro.experiments.options import Options
    from repro.experiments.plan import RunSpec
    from repro.experiments.preflight import check_batch_split
    config = tmp_path / "imagenet.yaml"
    config.write_text("data:\n  batch_size: 224\n")
    spec = RunSpec("figure4", "frossl", "imagenet", 0, config, "x", [], [])
    check_batch_split([spec], Options(gpus=4))            # 4 x 56: the paper's split
    with pytest.raises(UserError, match="does not divide"):
        check_batch_split([spec], Options(gpus=3))


def test_table3_runs_stop_cleanly_once_their_last_epoch_is_validated(tmp_path):
    """Table 3 needs epochs <= 100 of a 500-epoch schedule: the run is ended with SIGTERM (the
    trainer checkpoints) once that epoch's online validation is written; it resumes later."""
    from repro.experiments.commands import train_command
    from repro.experiments.options import Options
    from repro.experiments.plan import RunSpec
    from repro.experiments.run import Runner
    from repro.experiments.state import online_by_epoch, train_state
    opts = Options(out=tmp_path, data_dir="data")
    spec = RunSpec("table", "frossl", "digits", 0, ROOT / "repro/configs/demo.yaml", "stop", [
        "optim.epochs=40", "eval.online_eval_every=1", "model.width=8", "model.proj_hidden_dim=32",
        "model.proj_output_dim=16", "data.batch_size=64", "data.subset=256"], [], stop_at_epoch=2)
    runner = Runner(opts)
    runner.poll_seconds = 0.2
    run_dir = spec.run_dir(opts)
    code = runner.run(train_command(spec, opts),
                      stop_when=lambda: max(online_by_epoch(run_dir), default=0) >= spec.stop_at_epoch)
    assert code == 0 and not runner.failures
    assert 2 <= max(online_by_epoch(run_dir)) < 40 and (run_dir / "checkpoint.pt").exists()
    assert not (run_dir / "pretrain.json").exists() and train_state(spec, opts) == "stopped"


# ---- several machines (NNODES), checks before launching, data that cannot be downloaded --------------

def error_lines(result):
    """The `error:` lines of a failed make (make adds its own `make: ***` line)."""
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]


def test_make_n_multi_node_launches_torchrun_with_the_rendezvous(tmp_path):
    """NNODES=2: the same command on both machines; torchrun gets --nnodes/--node_rank/--master_addr/
    --master_port and RDZV_TIMEOUT as its rendezvous timeout (no --standalone); node 1 only trains, node 0
    also evaluates, collects, checks."""
    if not config_path("cifar10", "frossl").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")
    common = [f"OUT={tmp_path}", "METHODS=frossl", "DATASETS=cifar10", "GPUS=4", "NNODES=2", "MASTER_ADDR=10.0.0.1"]
    worker = make("-n", "table2", "NODE_RANK=1", *common)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    line = next(ln for ln in worker.stdout.splitlines() if "repro.train" in ln)
    assert ("torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 --rdzv_conf=timeout=600 "
            "--nproc_per_node=4 -m repro.train repro/configs/cifar10/frossl.yaml name=cifar10-frossl-seed0 ") in line, line
    assert "--standalone" not in worker.stdout
    commands = "\n".join(ln for ln in worker.stdout.splitlines() if not ln.lstrip().startswith("#"))  # not the plan
    assert "repro.evaluate" not in commands and "repro.check" not in commands
    master = make("-n", "table2", "NODE_RANK=0", "MASTER_PORT=29600", "RDZV_TIMEOUT=60", *common)
    assert master.returncode == 0, master.stdout + master.stderr
    assert "--node_rank=0 --master_addr=10.0.0.1 --master_port=29600 --rdzv_conf=timeout=60 --nproc_per_node=4" \
        in master.stdout
    assert "repro.evaluate" in master.stdout and "repro.check" in master.stdout
    assert not tmp_path.joinpath("results").exists()


def test_multi_node_needs_master_addr_and_a_batch_that_divides_over_every_process(tmp_path):
    result = make("-n", "table2", f"OUT={tmp_path}", "NNODES=2")
    assert result.returncode != 0 and len(error_lines(result)) == 1, result.stderr
    assert "MASTER_ADDR" in error_lines(result)[0]
    bad_rank = make("-n", "table2", f"OUT={tmp_path}", "NNODES=2", "NODE_RANK=2", "MASTER_ADDR=h")
    assert bad_rank.returncode != 0 and "NODE_RANK" in error_lines(bad_rank)[0]
    if config_path("imagenet", "frossl").exists():  # Figure 4's 224: 2 x 4 = 8 divides it, 3 x 4 = 12 does not
        assert make("-n", "figure4", f"OUT={tmp_path}", "GPUS=4", "NNODES=2", "MASTER_ADDR=h").returncode == 0
        split = make("-n", "figure4", f"OUT={tmp_path}", "GPUS=4", "NNODES=3", "MASTER_ADDR=h")
        assert split.returncode != 0 and "NNODES x GPUS = 3 x 4 = 12 does not divide" in error_lines(split)[0]


def test_every_target_checks_its_batch_split_not_only_figure4(tmp_path):
    """Table 2 (batch 256) with OVERRIDES=data.batch_size=250 on GPUS=4: refused before any run."""
    if not config_path("cifar10", "frossl").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")
    result = make("-n", "table2", f"OUT={tmp_path}", "METHODS=frossl", "DATASETS=cifar10", "GPUS=4",
                  "OVERRIDES=data.batch_size=250")
    assert result.returncode != 0 and len(error_lines(result)) == 1, result.stdout + result.stderr
    assert "GPUS=4 does not divide the global batch of 250" in error_lines(result)[0]
    assert "repro.train" not in result.stdout


@pytest.mark.parametrize("overrides, problem", [("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
                                                 ("optim.lr=fast", "config key 'optim.lr' = 'fast'")])
def test_bad_overrides_stop_the_target_before_anything_runs(tmp_path, overrides, problem):
    """A real (not dry) run: the ConfigError as one line, exit non-zero, no data step, nothing trained,
    the previous results untouched."""
    if not config_path("cifar10", "frossl").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")
    out, data = tmp_path / "runs", tmp_path / "data"
    (out / "results").mkdir(parents=True)
    (out / "results" / "table2.json").write_text('{"previous": true}\n')
    result = make("table2", f"OUT={out}", f"DATA_DIR={data}", "METHODS=frossl", "DATASETS=cifar10",
                  f"OVERRIDES={overrides}")
    assert result.returncode != 0, result.stdout + result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and problem in lines[0] and "fix OVERRIDES" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "repro.train" not in result.stdout and "download" not in result.stdout
    assert not data.exists() and sorted(p.name for p in out.rglob("*")) == ["results", "table2.json"]
    assert (out / "results" / "table2.json").read_text() == '{"previous": true}\n'


def test_gpus_beyond_the_visible_devices_is_an_error_on_cuda_and_cpu_processes_without(monkeypatch, capsys):
    import torch

    from repro.cli import UserError
    from repro.experiments.options import Options
    from repro.experiments.plan import plan_runs
    from repro.experiments.preflight import preflight as check_plan
    from repro.experiments.table import TABLE2
    if not config_path("cifar10", "frossl").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")

    def preflight(opts):
        check_plan(plan_runs(TABLE2, opts), opts)

    opts = Options(methods=("frossl",), datasets=("cifar10",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    preflight(replace(opts, gpus=2))                           # fits
    with pytest.raises(UserError, match=r"GPUS=4 but this machine has 2 visible CUDA device\(s\): set GPUS=2"):
        preflight(replace(opts, gpus=4))
    preflight(replace(opts, gpus=4, dry_run=True))             # a plan on a login node: no check
    preflight(replace(opts, gpus=4, overrides=("device=cpu",)))  # CPU runs: processes, not GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    preflight(replace(opts, gpus=8))
    said = [ln for ln in capsys.readouterr().out.splitlines() if "CPU processes" in ln]
    assert said == ["# no CUDA device on this machine: GPUS=8 runs 8 CPU processes per run (gloo), not GPUs"]


def test_download_without_network_is_one_line_saying_where_to_put_the_files(tmp_path, monkeypatch, capsys):
    from urllib.error import URLError

    import torchvision

    from repro.cli import UserError, run_cli
    from repro.experiments.cli import main
    from repro.experiments.data_steps import download

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setattr(torchvision.datasets, "STL10", lambda *a, **k: (_ for _ in ()).throw(OSError("reset")))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["download", "cifar10", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: download of cifar10 into"), lines
    assert "URLError" in lines[0] and "cifar-10-batches-py/ (unpacked from https://" in lines[0]
    assert f"in {tmp_path}/" in lines[0] and "PREPARE_DATA=none" in lines[0]
    with pytest.raises(UserError, match="put stl10_binary/"):
        download("stl10", str(tmp_path))


def test_a_failed_data_step_stops_the_target_before_training(tmp_path, monkeypatch):
    """PREPARE_DATA=auto with no data and no network: the download step fails, the target stops with
    a non-zero exit and launches no training on the missing data."""
    from repro.cli import UserError
    from repro.experiments.options import Options
    from repro.experiments.run import Runner, run_target
    from repro.experiments.table import TABLE2
    if not config_path("cifar10", "frossl").exists():
        pytest.skip("repro/configs/cifar10/frossl.yaml not written yet")
    launched = []

    def run(self, command, **kwargs):
        launched.append(" ".join(command))
        return 1 if "download" in command else 0   # as `repro.experiments download` offline: exit 2

    monkeypatch.setattr(Runner, "run", run)
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), methods=("frossl",), datasets=("cifar10",))
    with pytest.raises(UserError, match="download cifar10 .* failed .*nothing was trained"):
        run_target(TABLE2, opts)
    assert any("download cifar10" in c for c in launched)
    assert not any("repro.train" in c or "repro.evaluate" in c or "repro.check" in c for c in launched), launched


def test_a_crash_while_writing_results_keeps_the_previous_file(tmp_path, monkeypatch):
    """experiments.collect writes OUT/results/<experiment>.json to a temporary file and renames it:
    a failure at the rename (a kill, a full disk) leaves the previous result whole, no temporary."""
    from repro.experiments.options import Options
    from repro.experiments.results import collect
    from repro.experiments.table import TABLE2
    opts = Options(out=tmp_path / "runs")
    first = collect(TABLE2, opts)
    before = first.read_text()
    assert json.loads(before)["experiment"] == "table2"

    def crash(src, dst):
        raise OSError("simulated crash during the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        collect(TABLE2, opts)
    monkeypatch.undo()
    assert first.read_text() == before and sorted(p.name for p in opts.results.iterdir()) == ["table2.json"]
