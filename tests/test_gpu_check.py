"""`make gpu-check` on CPU: the dry mode end to end (also on a simulated bare node without ffcv,
scikit-learn or tensorboard), a run killed mid-way, a failing part, bad input, the compiler check,
the estimate's arithmetic (hand-computed), the parsing of the trainer's metrics."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from repro import gpu_check
from repro.gpu_check import env as gpu_env
from repro.cli import UserError, run_cli
from repro.gpu_check.estimate import estimate_targets, flops_per_second, reference_rate
from repro.gpu_check.report import parse_train
from tests.conftest import ROOT, SHARED_CIFAR


def tiny_archive(path, classes=("a", "b"), train=4, test=2):
    """A .tar.gz in the CIFAR-10 JPEG archive's layout: cifar10/<split>/<class>/<n>.jpg."""
    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", train), ("test", test)):
            for c, cls in enumerate(classes):
                for i in range(count):
                    buffer = io.BytesIO()
                    Image.new("RGB", (32, 32), (40 * c, 10 * i, 100)).save(buffer, format="JPEG")
                    info = tarfile.TarInfo(f"cifar10/{split}/{cls}/{i:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
    return path


# ---- the estimate: rate 10 s per CIFAR-10 epoch -> 0.43 PFLOP / 10 s = 0.043 PFLOP/s --------------

def test_the_estimates_row_counts_are_the_planners():
    """The estimate counts the runs each target trains: the rows of its record in the experiments table."""
    from repro.experiments.table import EXPERIMENTS
    from repro.gpu_check.estimate import TARGET_RUNS
    trained = [name for name, runs in TARGET_RUNS.items() if runs]
    assert trained == ["table2", "table3", "ablation", "figure3", "figure4"]
    for name in trained:
        assert {(run.count, run.dataset) for run in TARGET_RUNS[name]} == {
            (len(EXPERIMENTS[name].rows), dataset) for dataset in EXPERIMENTS[name].datasets}, name


def test_estimate_matches_hand_computed_seconds():
    targets = estimate_targets(10.0)
    # table2, per row: pretraining (1000 + 1000 + 500) x 0.43 / 0.043 = 25,000 s; probes: CIFAR
    # 100 x 0.43 / 6 / 0.043 = 166.667 s each, STL-10 100 x (5,000 / 105,000) x 0.43 / 6 / 0.043 = 7.937 s
    assert targets["table2"]["pretrain_s"] == pytest.approx(12 * 25_000)
    assert targets["table2"]["probe_s"] == pytest.approx(12 * (2 * 1000 / 6 + 1000 / 6 * 5_000 / 105_000))
    assert targets["table2"]["seconds"] == pytest.approx(304_095.238, abs=1e-3)
    assert targets["ablation"]["seconds"] == pytest.approx(2 * 304_095.238 / 12, abs=1e-3)   # its two rows
    # table3: 11 rows x 100 STL-10 epochs x 10 s (STL-10's epoch has the same FLOPs as CIFAR's), no probe
    assert targets["table3"]["seconds"] == pytest.approx(11_000)
    assert targets["figure3"]["seconds"] == pytest.approx(4 * 5 * 10)
    # figure4: 2 x 100 x 28 / 0.043 = 130,232.56 s; probes 2 x 100 x 28 / 6 / 0.043 = 21,705.43 s
    assert targets["figure4"]["pretrain_s"] == pytest.approx(130_232.558, abs=1e-3)
    assert targets["figure4"]["probe_s"] == pytest.approx(21_705.426, abs=1e-3)
    assert targets["figure2"]["seconds"] == 0
    assert targets["all"]["seconds"] == pytest.approx(304_095.238 + 200 + 151_937.984, abs=1e-2)
    assert targets["all"]["hours"] == pytest.approx(targets["all"]["seconds"] / 3600)


def test_the_range_before_a_measurement_is_flop_based_and_anchor_based():
    """Without a measured rate the estimate part still gives every target's two estimates."""
    parts = {name: gpu_check.Part(name) for name in gpu_check.PARTS}
    gpu_check.estimate(parts["estimate"], parts, dry=False)
    part = parts["estimate"]
    assert part.status == "skipped" and "no measured rate" in part.reason and "targets" not in part.details
    # table2 pretraining, 12 rows x 2,500 epochs of 0.43 PFLOP: at 35% of 989 TFLOP/s, and at the
    # published anchor's 11.9 s per CIFAR-10 epoch (STL-10's epoch has the same FLOPs)
    assert part.details["flop_based"]["table2"]["pretrain_s"] == pytest.approx(12 * 2500 * 0.43e15 / (0.35 * 989e12))
    assert part.details["anchor_based"]["table2"]["pretrain_s"] == pytest.approx(12 * 2500 * 11.9)
    assert reference_rate() == pytest.approx(346.15e12)
    markdown = gpu_check.render_markdown({"date": "d", "mode": "full", "finished": True, "command": "c", "data": {},
                                          "loader": "torchvision", "loader_note": "", "failed": [], "wall_s": 1,
                                          "parts": {n: gpu_check.asdict(p) for n, p in parts.items()}})
    row = next(line for line in markdown.splitlines() if line.startswith("| table2 |"))
    # nothing measured; anchor: 99.2 h of pretraining + 12 x (2 x 100 x 11.9 / 6 + 100 x 11.9 / 6 x 5/105) s
    # of probes (1.35 h) = 100.5 h = 4.2 d
    assert row.endswith("| - | 10.5 h | 4.2 d |")


def test_estimate_scales_inversely_with_the_measured_rate():
    slow, fast = estimate_targets(20.0), estimate_targets(5.0)
    assert slow["table2"]["seconds"] == pytest.approx(4 * fast["table2"]["seconds"])
    with pytest.raises(ValueError):
        flops_per_second(0.0)


# ---- reading the trainer's output ------------------------------------------------------------

def test_parse_train_times_epochs_from_the_metric_windows(tmp_path):
    # batch 10, 10 steps per epoch; each line covers the steps since the previous one
    lines = [{"step": 5, "epoch": 0.5, "images_per_s": 10.0},    # 50 images / 10 = 5 s
             {"step": 10, "epoch": 1.0, "images_per_s": 25.0},   # 2 s -> epoch 1: 7 s
             {"epoch": 1, "step": 10, "online_top1": 0.2, "online_top5": 0.6},
             {"step": 15, "epoch": 1.5, "images_per_s": 50.0},   # 1 s
             {"step": 20, "epoch": 2.0, "images_per_s": 50.0},   # 1 s -> epoch 2: 2 s
             {"epoch": 2, "step": 20, "online_top1": 0.3, "online_top5": 0.7}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = tmp_path / "train.log"
    log.write_text("noise\ndata: torchvision two-view loader for imagefolder train (data.loader=torchvision)\n")
    out = parse_train(metrics, log, batch=10)
    assert out["epoch_train_s"] == {"1": 7.0, "2": 2.0}
    assert out["timed_epochs"] == [2]                   # epoch 1 (warm-up) left out of the rate
    assert out["s_per_epoch"] == pytest.approx(2.0)
    assert out["images_per_s"] == pytest.approx(50.0)
    assert out["final_online_top1"] == 0.3
    assert out["loader_line"].startswith("data: torchvision two-view loader")


def test_data_from_an_archive_a_pickle_folder_or_neither(tmp_path):
    from repro.gpu_check.data import prepare_data

    archive = tiny_archive(tmp_path / "tiny.tar.gz", train=3, test=2)
    data = prepare_data(archive, tmp_path / "work", {"train": 2, "test": 1})
    assert data.kind == "archive" and "data.dataset=imagefolder" in data.train_overrides
    assert data.images == {"train": 4, "test": 2}       # 2 classes x the per-class limits
    batches = data.cifar_pickles / "cifar-10-batches-py"
    assert sorted(p.name for p in batches.iterdir()) == ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)] \
        + ["test_batch"]
    cifar = prepare_data(data.cifar_pickles, tmp_path / "work2", {"train": 2, "test": 1})
    assert cifar.kind == "cifar10" and "data.subset=20" in cifar.train_overrides
    assert cifar.cifar_pickles == data.cifar_pickles.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither the CIFAR-10 JPEG archive"):
        prepare_data(tmp_path / "empty", tmp_path / "work3", {"train": 2, "test": 1})


# ---- failures and bad input ------------------------------------------------------------------

def test_a_failing_trainer_makes_the_exit_non_zero_and_is_named(tmp_path, monkeypatch):
    archive = tiny_archive(tmp_path / "tiny.tar.gz")
    monkeypatch.setattr(gpu_check, "TRAINER", ["-c", "import sys; print('injected trainer failure'); sys.exit(3)"])
    out = tmp_path / "out"
    code = gpu_check.main(["--dry-run", "--data", str(archive), "--out", str(out), "--only", "train,estimate",
                           "--loader", "torchvision"])
    assert code == 1
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["failed"] == ["train"]
    assert "exit status 3" in summary["parts"]["train"]["reason"]
    assert "injected trainer failure" in summary["parts"]["train"]["reason"]
    assert summary["parts"]["estimate"]["status"] == "skipped"      # no measured rate to scale
    markdown = (out / "gpu_check.md").read_text()
    assert "FAILED: train" in markdown and "| train | FAILED |" in markdown


def test_a_command_past_the_budget_is_stopped_and_its_part_fails(tmp_path, monkeypatch):
    archive = tiny_archive(tmp_path / "tiny.tar.gz")
    monkeypatch.setattr(gpu_check, "TRAINER", ["-c", "import time; time.sleep(120)"])
    out = tmp_path / "out"
    started = time.perf_counter()
    code = gpu_check.main(["--dry-run", "--budget", "0.2", "--data", str(archive), "--out", str(out),
                           "--only", "train", "--loader", "torchvision"])
    assert time.perf_counter() - started < 100          # stopped, not waited for
    assert code == 1
    reason = json.loads((out / "gpu_check.json").read_text())["parts"]["train"]["reason"]
    assert "timed out" in reason or "budget" in reason


def test_without_cuda_a_full_run_fails_the_environment_and_skips_the_rest(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: a full run would run every part")
    out = tmp_path / "out"
    code = gpu_check.main(["--data", str(tiny_archive(tmp_path / "tiny.tar.gz")), "--out", str(out)])
    assert code == 1
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["failed"] == ["environment"]
    assert "torch.cuda.is_available() is False" in summary["parts"]["environment"]["reason"]
    assert "--dry-run" in summary["parts"]["environment"]["reason"]
    for name in ("cuda_tests", "bench_eager", "bench_compile", "train"):
        assert summary["parts"][name]["status"] == "skipped" and "needs CUDA" in summary["parts"][name]["reason"]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(gpu_check.main, ["--dry-run", "--data", str(tmp_path / "missing.tar.gz"), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data") and "does not exist" in err[0]
    assert not out.exists()
    with pytest.raises(UserError, match="unknown part"):
        gpu_check.main(["--dry-run", "--only", "trian", "--data", str(tmp_path)])


def test_a_missing_pyyaml_is_named_in_the_preflight(monkeypatch):
    real = gpu_env.importlib.util.find_spec
    monkeypatch.setattr(gpu_env.importlib.util, "find_spec",
                        lambda name, *a: None if name == "yaml" else real(name, *a))
    with pytest.raises(UserError, match="pyyaml is not installed.*configs are YAML"):
        gpu_env.preflight()


def test_without_ffcv_the_torchvision_loader_is_chosen_and_said():
    loader, note = gpu_check.resolve_loader("auto", {"ffcv": None})
    assert loader == "torchvision" and "ffcv is not installed" in note and "torchvision loader" in note
    assert gpu_check.resolve_loader("auto", {"ffcv": "1.0.2"})[0] == "ffcv"
    with pytest.raises(UserError, match="--loader ffcv but ffcv does not import"):
        gpu_check.resolve_loader("ffcv", {"ffcv": "broken: ImportError: numpy"})


def test_no_data_means_synthetic_batches_for_the_bench_and_no_train(tmp_path, monkeypatch):
    """No --data and no CIFAR10: nothing outside the checkout is looked for; the bench gets random
    images in CIFAR's files, the train part is skipped with the reason."""
    monkeypatch.delenv("CIFAR10", raising=False)
    argv = tmp_path / "bench-argv.json"
    monkeypatch.setattr(gpu_check, "BENCH", ["-c", f"import json, sys; open({str(argv)!r}, 'w').write(json.dumps("
                                                   "sys.argv)); sys.exit(4)"])
    out = tmp_path / "out"
    code = gpu_check.main(["--dry-run", "--out", str(out), "--loader", "torchvision"])
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["data"]["given"] is None and summary["data"]["kind"] == "synthetic"
    train = summary["parts"]["train"]
    assert train["status"] == "skipped" and "no --data or CIFAR10=" in train["reason"]
    args = json.loads(argv.read_text())
    root = Path(args[args.index("--root") + 1])
    assert root.is_relative_to(out / "work") and (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert code == 1 and summary["failed"] == ["bench_eager"]     # the stand-in bench "failed"
    monkeypatch.setenv("CIFAR10", str(tmp_path / "absent.tar.gz"))
    with pytest.raises(UserError, match="absent.tar.gz' does not exist"):
        gpu_check.main(["--dry-run", "--out", str(out)])


def test_without_a_compiler_the_compiled_bench_is_skipped_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    problem = gpu_env.compiler_problem()
    assert "no C compiler (CC=" in problem and "apt-get install gcc python3." in problem
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))                      # no cc, gcc or clang on it
    assert "no C compiler (cc, gcc, clang)" in gpu_env.compiler_problem()
    # a CUDA machine without one: the bench with --compile is not started, its part says why
    monkeypatch.setattr(gpu_check, "environment",
                        lambda part, optional, dry: part.details.update(compiler_problem=problem) or True)
    monkeypatch.setattr(gpu_check, "BENCH", ["-c", "raise SystemExit('the bench must not run')"])
    monkeypatch.setattr(gpu_check.Settings, "make", classmethod(
        lambda cls, dry, epochs, deadline: gpu_check.Settings(
            False, 1, 16, 8, 32, {}, {"train": 20, "test": 10}, [], 0, 1, {}, deadline)))
    out = tmp_path / "out"
    gpu_check.main(["--out", str(out), "--only", "bench_compile", "--loader", "torchvision"])
    part = json.loads((out / "gpu_check.json").read_text())["parts"]["bench_compile"]
    assert part["status"] == "skipped" and part["reason"] == problem and part["command"] == ""


def test_the_parts_fit_the_default_budget_of_at_most_9_minutes():
    full = gpu_check.Settings.make(False, None)
    assert gpu_check.DEFAULT_BUDGET_MIN <= 9
    # cuda_tests + both benches + train: what is left of the budget covers data and start-up
    assert sum((full.timeouts["cuda_tests"], 2 * full.timeouts["bench"], full.timeouts["train"])) < 60 * 9


# ---- a bare node: no ffcv, scikit-learn, tensorboard (hidden from the import system) -----------

HIDE = """
import sys
from importlib.machinery import PathFinder

HIDDEN = {"ffcv", "sklearn", "tensorboard", "numba", "cv2", "matplotlib", "scipy", "lightly"}


class Hide(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in HIDDEN else super().find_spec(name, path, target)


sys.meta_path[:] = [Hide if finder is PathFinder else finder for finder in sys.meta_path]
"""


def bare_node_env(tmp_path):
    """Environment of a bare node's Python: a sitecustomize (first on PYTHONPATH, so every child
    process gets it too) hides the optional packages; only the checkout is on PYTHONPATH besides;
    no network (a bogus index, no proxies)."""
    site = tmp_path / "bare-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k not in ("CIFAR10", "PYTHONPATH")}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{ROOT}", PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_INDEX="1")
    hidden = subprocess.run([sys.executable, "-c", "import ffcv"], env=env, capture_output=True, text=True)
    assert "No module named 'ffcv'" in hidden.stderr      # the simulation holds
    return env


def test_a_bare_node_without_data_runs_to_the_end_and_says_what_it_skipped(tmp_path):
    """The default suite's cut of the bare-node run below: no bench (its own slow test), the rest real."""
    out = tmp_path / "gpu-check"
    result = subprocess.run([sys.executable, "-m", "repro.gpu_check", "--dry-run", "--out", str(out),
                             "--only", "estimate"], cwd=tmp_path, env=bare_node_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    parts = summary["parts"]
    assert summary["finished"] and summary["data"]["given"] is None and summary["loader"] == "torchvision"
    assert parts["environment"]["status"] == "passed"
    assert parts["environment"]["details"]["optional_packages"]["sklearn"] is None
    assert parts["train"]["status"] == "skipped" and "no --data or CIFAR10=" in parts["train"]["reason"]
    assert parts["cuda_tests"]["status"] == "skipped" and "needs CUDA" in parts["cuda_tests"]["reason"]
    assert parts["estimate"]["status"] == "skipped" and parts["estimate"]["details"]["anchor_based"]["table2"]


@pytest.mark.slow   # 49-112 s on the 2-core dev machine (other jobs running): two torch imports, a CPU bench
def test_a_bare_node_runs_the_dry_mode_to_the_end(tmp_path):
    out = tmp_path / "gpu-check"
    result = subprocess.run([sys.executable, "-m", "repro.gpu_check", "--dry-run", "--out", str(out)], cwd=tmp_path,
                            env=bare_node_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    parts = summary["parts"]
    assert summary["finished"] and summary["failed"] == [] and summary["loader"] == "torchvision"
    optional = parts["environment"]["details"]["optional_packages"]
    assert optional["ffcv"] is None and optional["sklearn"] is None
    assert parts["bench_eager"]["status"] == "passed" and parts["bench_eager"]["details"]["data"] == "synthetic"
    assert parts["train"]["status"] == "skipped" and "no --data" in parts["train"]["reason"]
    assert parts["estimate"]["status"] == "passed" and parts["estimate"]["details"]["rate_source"] == "bench_eager"
    assert "| train | SKIPPED |" in (out / "gpu_check.md").read_text()


def test_a_run_killed_during_its_third_part_keeps_the_first_two(tmp_path):
    """SIGKILL while the bench (a stand-in that sleeps) runs: the summary on disk holds the
    environment's and the CUDA tests' results and names the part that was cut off."""
    out = tmp_path / "gpu-check"
    driver = textwrap.dedent(f"""
        from repro import gpu_check
        from repro.cli import run_cli
        gpu_check.BENCH = ["-c", "import time; time.sleep(300)"]
        run_cli(gpu_check.main, ["--dry-run", "--out", {str(out)!r}, "--loader", "torchvision"])
    """)
    process = subprocess.Popen([sys.executable, "-c", driver], cwd=tmp_path, env=bare_node_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    summary = {}
    try:
        while summary.get("parts", {}).get("bench_eager", {}).get("status") != "running":
            assert time.time() < deadline and process.poll() is None, "the bench part never started"
            time.sleep(0.2)
            try:
                summary = json.loads((out / "gpu_check.json").read_text())
            except (OSError, ValueError):
                pass
    finally:
        os.killpg(process.pid, signal.SIGKILL)      # the check and its bench (same session)
        process.wait()
    summary = json.loads((out / "gpu_check.json").read_text())
    parts = summary["parts"]
    assert not summary["finished"]
    assert parts["environment"]["status"] == "passed" and parts["environment"]["details"]["torch"]
    assert parts["cuda_tests"]["status"] == "skipped" and "needs CUDA" in parts["cuda_tests"]["reason"]
    assert parts["bench_eager"]["status"] == "running" and "cut off" in parts["bench_eager"]["reason"]
    assert parts["estimate"]["status"] == "pending"
    markdown = (out / "gpu_check.md").read_text()
    assert "**Unfinished**" in markdown and "| environment | PASSED |" in markdown


def test_the_cuda_marker_is_registered_and_its_tests_skip_with_a_reason_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the cuda tests run instead of skipping")
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-rs",
                             "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all("needs a CUDA GPU" in line for line in skipped)
    assert " passed" not in result.stdout and "failed" not in result.stdout


# ---- the dry mode end to end ------------------------------------------------------------------

# slow (make test-slow; `make gpu-check` runs the same parts on a GPU): ~90 s, numba compiles the FFCV
# loader in the bench and the train part; the default run keeps the parts' logic (budget, estimate, parsing)
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason=f"real CIFAR-10 not available at {SHARED_CIFAR}")
def test_dry_run_end_to_end_writes_every_part(tmp_path):
    out = tmp_path / "gpu-check"
    result = subprocess.run([sys.executable, "-m", "repro.gpu_check", "--dry-run", "--data", str(SHARED_CIFAR),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    parts = summary["parts"]
    assert set(parts) == set(gpu_check.PARTS) and summary["failed"] == []
    for name in ("environment", "bench_eager", "train", "estimate"):
        assert parts[name]["status"] == "passed", (name, parts[name]["reason"])
    assert parts["cuda_tests"]["status"] == "skipped" and "needs CUDA" in parts["cuda_tests"]["reason"]
    assert parts["bench_compile"]["status"] == "skipped" and parts["bench_compile"]["reason"]
    train = parts["train"]["details"]
    assert train["s_per_epoch"] > 0 and train["images_per_s"] > 0
    assert set(train["online_top1"]) == {"1", "2"}      # JSON keys: one validation per epoch
    assert train["loader_line"].startswith("data: ")
    assert set(parts["estimate"]["details"]["targets"]) == {"figure2", "table2", "table3", "ablation",
                                                           "figure3", "figure4", "all"}
    markdown = (out / "gpu_check.md").read_text()
    for name in gpu_check.PARTS:
        assert f"| {name} |" in markdown
    assert "| cuda_tests | SKIPPED |" in markdown and "needs CUDA" in markdown
