"""TensorBoard scalars beside metrics.jsonl: the same numbers at the same steps, each step once after a
crash and a resume, training without the tensorboard package, peak GPU memory on CUDA."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from repro.config import load_config
from repro.train import train
from tests.conftest import ROOT, crash_after_first_checkpoint

pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (requirements.txt pins it)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

# digits, 320 images in batches of 64: 5 steps per epoch; lines at steps 2, 4, 5 (epoch end), 6, 8, 10;
# an online-evaluation line at steps 5 and 10; spectra at steps 0, 2, 4, 6, 8
TINY = ["model.width=8", "model.proj_hidden_dim=64", "model.proj_output_dim=64", "data.subset=320",
        "data.batch_size=64", "optim.epochs=2", "optim.warmup_epochs=0", "train.log_every=2",
        "eval.online_eval_every=1", "train.spectra_every=2"]


def tiny_config(tmp_path, name, *overrides):
    return load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", f"name={name}", *TINY, *overrides])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def board_view(run_dir) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: tag -> [(step, value)] in file order, after its purges."""
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})   # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_view(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The scalars the JSONL files hold, step/epoch being the axis; None (JSON null) is no point."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for prefix in ("metrics", "spectra"):
        for record in read_jsonl(run_dir / f"{prefix}.jsonl"):
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    expected.setdefault(f"{prefix}/{key}", []).append((record["step"], value))
    return expected


def assert_board_equals_files(run_dir):
    board, expected = board_view(run_dir), expected_view(run_dir)
    assert sorted(board) == sorted(expected)
    for tag, points in expected.items():
        steps = [step for step, _ in board[tag]]
        assert steps == [step for step, _ in points], f"{tag}: steps {steps}, each once and in order"
        # event files store float32: equal to ~6e-8 relative
        assert [value for _, value in board[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_scalars_equal_metrics_jsonl_and_spectra_at_the_same_steps(tmp_path):
    cfg = tiny_config(tmp_path, "straight")
    train(cfg)
    assert_board_equals_files(cfg.run_dir)
    board = board_view(cfg.run_dir)
    assert [step for step, _ in board["metrics/loss"]] == [2, 4, 5, 6, 8, 10]
    assert [step for step, _ in board["metrics/online_top1"]] == [5, 10]
    assert {"metrics/lr", "metrics/images_per_s", "metrics/online_top5", "spectra/entropy",
            "spectra/condition_number"} <= set(board)
    assert "metrics/peak_memory_gib" not in board   # CUDA only


def test_a_crash_right_after_the_first_checkpoint_then_resume_shows_each_step_once(tmp_path, monkeypatch):
    # the lines of the checkpoint's step 5 are kept in metrics.jsonl: TensorBoard drops its step-5
    # points with everything after them and is given them again, so they appear once, not 0 or 2 times
    cfg = tiny_config(tmp_path, "crashed")
    crash_after_first_checkpoint(cfg, monkeypatch)
    assert [step for step, _ in board_view(cfg.run_dir)["metrics/loss"]] == [2, 4, 5]
    train(cfg)
    assert_board_equals_files(cfg.run_dir)


def test_points_written_past_the_checkpoint_before_a_crash_are_dropped_on_resume(tmp_path, monkeypatch):
    from repro import train as train_module

    cfg = tiny_config(tmp_path, "died")
    real_set_lr = train_module.set_lr

    def die_in_step_9(optimizer, step, **schedule):   # `step` = steps done: 8
        if step == 8:
            raise KeyboardInterrupt("simulated crash between the checkpoints of steps 5 and 10")
        return real_set_lr(optimizer, step, **schedule)

    monkeypatch.setattr(train_module, "set_lr", die_in_step_9)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(train_module, "set_lr", real_set_lr)
    before = board_view(cfg.run_dir)
    assert [step for step, _ in before["metrics/loss"]] == [2, 4, 5, 6, 8]   # 6 and 8: past the checkpoint
    assert max(step for step, _ in before["spectra/entropy"]) >= 6
    stale_speed = dict(before["metrics/images_per_s"])[6]

    train(cfg)   # resumes at step 5
    assert_board_equals_files(cfg.run_dir)
    speeds = dict(board_view(cfg.run_dir)["metrics/images_per_s"])
    resumed_speed = next(r["images_per_s"] for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if r["step"] == 6)
    assert speeds[6] == pytest.approx(resumed_speed, rel=1e-6) and stale_speed != pytest.approx(resumed_speed, rel=1e-6)


def test_training_without_the_tensorboard_package_works_and_says_so_once(tmp_path, monkeypatch, capfd):
    # None in sys.modules makes `from torch.utils.tensorboard import SummaryWriter` raise ImportError,
    # as on a node whose torch has no tensorboard beside it
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = tiny_config(tmp_path, "no-board", "optim.epochs=1")
    summary = train(cfg)
    err = capfd.readouterr().err
    assert err.count("TensorBoard logging is off") == 1, err
    assert "metrics.jsonl is written as usual" in err and "requirements.txt" in err
    assert summary["steps"] == 5 and not (cfg.run_dir / "tb").exists()
    assert [r["step"] for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if "loss" in r] == [2, 4, 5]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
def test_on_cuda_every_training_line_has_the_peak_gpu_memory(tmp_path):
    cfg = tiny_config(tmp_path, "cuda", "device=cuda", "train.spectra_every=0")
    train(cfg)
    records = [r for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if "loss" in r]
    peaks = [r["peak_memory_gib"] for r in records]
    assert len(peaks) == 6 and all(0 < p < torch.cuda.get_device_properties(0).total_memory / 2**30 for p in peaks)
    assert peaks == sorted(peaks)   # a running maximum
    assert_board_equals_files(cfg.run_dir)
