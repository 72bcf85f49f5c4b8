"""Eigen-dynamics metrics equal their definitions on matrices with known spectra; the tracker
records view 1's embeddings every k steps and trims on resume; the trainer option writes them."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from repro.spectra import (SpectraTracker, condition_number, covariance_eigenvalues, moving_average,
                           read_spectra, saturation_index, settling_index, spectral_entropy, summarize)


def embeddings_with_spectrum(eigenvalues, n, seed=0):
    """(n, d) embeddings whose covariance (centred, / n) has exactly the given eigenvalues."""
    generator = torch.Generator().manual_seed(seed)
    d = len(eigenvalues)
    gaussian = torch.randn(n, d, generator=generator, dtype=torch.float64)
    white, _ = torch.linalg.qr(gaussian - gaussian.mean(0))          # centred, orthonormal columns
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (white * math.sqrt(n)) @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64).sqrt()) @ rotation.T


@pytest.mark.parametrize("n", [300, 25])   # N > D (D x D covariance) and N < D (N x N Gram)
def test_covariance_eigenvalues_known_spectrum(n):
    spectrum = sorted(np.geomspace(10.0, 0.01, 20), reverse=True)
    z = embeddings_with_spectrum(spectrum, 300) if n == 300 else None
    if n == 300:
        top = covariance_eigenvalues(z.float() + 5.0)        # a shift of every dimension: removed by centring
        assert torch.allclose(top, torch.tensor(spectrum[:14], dtype=torch.float64), rtol=1e-4)
    else:  # 25 samples in 40 dimensions: rank 24; the Gram path gives the same non-zero eigenvalues
        z = torch.randn(n, 40, dtype=torch.float64)
        centred = z - z.mean(0)
        expected = torch.linalg.eigvalsh(centred.T @ centred / n).flip(0)[:14]
        assert torch.allclose(covariance_eigenvalues(z), expected, atol=1e-10)


def test_condition_number_and_entropy_definitions():
    spectrum = [8.0, 4.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.1, 0.05, 0.01]
    assert condition_number(spectrum) == pytest.approx(8.0 / 0.05)        # lambda_1 / lambda_14
    p = np.array(spectrum[:14]) / sum(spectrum[:14])
    assert spectral_entropy(spectrum) == pytest.approx(-(p * np.log(p)).sum())
    assert spectral_entropy([3.0] * 14) == pytest.approx(math.log(14))     # maximum: all equal
    assert spectral_entropy([1.0] + [0.0] * 13) == 0.0                      # 0 log 0 = 0
    assert condition_number([1.0] * 13 + [0.0]) == math.inf
    with pytest.raises(ValueError):
        condition_number([1.0] * 5)


def test_saturation_index_definition():
    rise = [1e-6, 1e-5, 1e-4, 1e-2, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    assert saturation_index(rise, band=0.5) == 5             # 0.6 is the first value within 2x of 1.0 for good
    assert saturation_index(rise, band=0.9) == 6
    dip = [1e-6, 0.6, 0.1, 0.8, 1.0]                          # leaves the band again: saturated later
    assert saturation_index(dip, band=0.5) == 3
    assert saturation_index([0.5, 0.5, 0.5], band=0.9) == 0
    assert saturation_index([1.0, 0.0], band=0.5) is None     # final value 0: undefined
    assert np.allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    noisy = [1e-4, 1e-3, 1.0, 0.1, 1.0, 1.0, 1.0]             # one noisy record, smoothed away with smooth=3
    assert saturation_index(noisy, band=0.5) == 4
    assert saturation_index(noisy, band=0.3, smooth=3) < 6


class TwoViewToy(nn.Module):
    """Runs view 1 then view 2 through its projector, like every method."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Identity()
        self.projector = nn.Linear(16, 16)

    def forward(self, views):
        return [self.projector(self.backbone(v)) for v in views]


def test_settling_index_is_not_degenerate_where_the_factor_2_band_is():
    # lambda_14 grows 1.0 -> 1.8 and stays: never a factor 2 from its final value, so Figure 3's
    # band calls it saturated at record 0; its log range is ln 1.8 = 0.588, 20% of it 0.118, and
    # it is within that of ln 1.8 (x >= 1.8 / e^0.118 = 1.60) from record 4 (1.7) on
    series = [1.0, 1.2, 1.4, 1.55, 1.7, 1.75, 1.8, 1.78, 1.8]
    assert saturation_index(series, band=0.5) == 0
    assert settling_index(series, smooth=1) == 4
    # a series that leaves and comes back: settled only after its last excursion
    assert settling_index([2.0, 2.0, 8.0, 2.0, 2.0], smooth=1) == 3
    assert settling_index([3.0, 3.0, 3.0], smooth=1) == 0          # constant: settled from the start
    assert settling_index([1.0, 0.0, 2.0], smooth=1) is None       # a zero eigenvalue has no log
    # smoothing averages over the trailing records first: [1, 1, 5, 5] -> [1, 1, 3, 5]
    assert settling_index([1.0, 1.0, 5.0, 5.0], smooth=2) == 3


def test_tracker_records_view1_every_k_steps_and_trims_on_resume(tmp_path):
    model = TwoViewToy()
    spectrum = list(np.linspace(3.0, 0.2, 16))
    view1 = embeddings_with_spectrum(spectrum, 64).float()
    tracker = SpectraTracker(model, tmp_path, every=2, start_step=0, steps_per_epoch=4)
    for step in range(6):
        with torch.no_grad():
            model.projector.weight.copy_(torch.eye(16))
            model.projector.bias.zero_()
        model([view1, torch.randn(64, 16)])    # view 2 must not be what is recorded
        tracker.after_step(step + 1)
    tracker.close()
    records = read_spectra(tmp_path)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[1]["epoch"] == 0.5 and records[0]["source"] == "projector"
    assert np.allclose(records[0]["eigenvalues"], spectrum[:14], rtol=1e-4)
    assert records[0]["condition_number"] == pytest.approx(spectrum[0] / spectrum[13], rel=1e-4)
    # resume at step 3: the record of step 4 (after the checkpoint) is dropped and written again
    tracker = SpectraTracker(model, tmp_path, every=2, start_step=3)
    tracker.close()
    assert [r["step"] for r in read_spectra(tmp_path)] == [0, 2]
    summary = summarize(records)
    assert summary["final_step"] == 4 and summary["saturation_step"] == 0


def test_trainer_option_writes_spectra(tmp_path):
    from repro.config import load_config
    from repro.train import train
    from tests.conftest import ROOT
    cfg = load_config(ROOT / "repro/configs/demo.yaml", [
        f"out_dir={tmp_path}", "name=spectra", "optim.epochs=1", "model.width=8", "model.proj_hidden_dim=32",
        "model.proj_output_dim=16", "data.batch_size=64", "train.spectra_every=5", "eval.online_eval_every=1"])
    train(cfg)
    records = read_spectra(cfg.run_dir)
    assert [r["step"] for r in records] == [0, 5, 10, 15]          # 20 steps of 64 digits
    assert all(len(r["eigenvalues"]) == 14 and r["entropy"] > 0 for r in records)
    online = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
              if "online_top1" in line]
    assert 0 <= online[-1]["online_top1"] <= online[-1]["online_top5"] <= 1   # top-5 for Figure 4


def test_the_documented_figure3_rule_is_the_one_the_code_uses():
    """The band and smoothing stated in repro/spectra.py's docstring and expected_results/figure3.yaml
    are FIGURE3_BAND and FIGURE3_SMOOTH, which summarize() uses by default."""
    import inspect

    import yaml

    from repro import spectra
    from repro.check import EXPECTED_DIR
    assert f"Figure 3 uses band {spectra.FIGURE3_BAND}" in spectra.__doc__
    assert f"and smooth {spectra.FIGURE3_SMOOTH} (FIGURE3_BAND" in " ".join(spectra.__doc__.split())
    defaults = inspect.signature(summarize).parameters
    assert defaults["band"].default == spectra.FIGURE3_BAND and defaults["smooth"].default == spectra.FIGURE3_SMOOTH
    header = (EXPECTED_DIR / "figure3.yaml").read_text()
    assert f"{spectra.FIGURE3_SMOOTH}-record moving average" in header
    assert f"within a factor {spectra.FIGURE3_BAND} of its final value" in " ".join(
        line.lstrip("# ") for line in header.splitlines())


def test_tracker_skips_embeddings_that_are_not_finite_and_records_the_next_step(tmp_path, capsys, monkeypatch):
    model = TwoViewToy()
    tracker = SpectraTracker(model, tmp_path, every=1, start_step=0)
    finite = embeddings_with_spectrum(list(np.linspace(3.0, 0.2, 16)), 64).float()
    eigvalsh = torch.linalg.eigvalsh

    def fails_once(matrix):   # as on embeddings of 1e16 and more (LinAlgError, "failed to converge")
        monkeypatch.setattr(torch.linalg, "eigvalsh", eigvalsh)
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
    for step, view1 in enumerate([finite.clone().fill_(float("nan")), finite * float("inf"), finite, finite]):
        if step == 2:
            monkeypatch.setattr(torch.linalg, "eigvalsh", fails_once)
        with torch.no_grad():
            model.projector.weight.copy_(torch.eye(16))
            model.projector.bias.zero_()
        model([view1, finite])
        tracker.after_step(step + 1)
    tracker.close()
    assert [r["step"] for r in read_spectra(tmp_path)] == [3]   # the last step only; no exception before it
    err = capsys.readouterr().err
    assert all(f"spectra: no record at step {s}: the embeddings are not finite" in err for s in (0, 1, 2))


def test_a_diverging_run_with_spectra_on_stops_with_the_loss_message_and_diverged_json(tmp_path):
    """VICReg at lr 1e30: the embeddings go non-finite on step 2. The spectra record of that step is
    skipped (an eigendecomposition of them raised LinAlgError and killed the run with a traceback, so a
    learning-rate sweep could not count the run as diverged); the trainer's loss check stops it."""
    from repro.config import load_config
    from repro.train import DIVERGED, TrainingDiverged, train
    from tests.conftest import ROOT
    cfg = load_config(ROOT / "repro/configs/demo.yaml", [
        f"out_dir={tmp_path}", "name=diverges", "method=vicreg", "optim.epochs=1", "model.width=8",
        "model.proj_hidden_dim=32", "model.proj_output_dim=16", "data.batch_size=64", "data.subset=128",
        "train.spectra_every=1", "train.log_every=50", "optim.lr=1e30", "optim.warmup_epochs=0"])
    with pytest.raises(TrainingDiverged, match="loss became non-finite by step 2"):
        train(cfg)
    assert (cfg.run_dir / DIVERGED).exists()
