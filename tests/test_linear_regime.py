"""Figure 2 on real CIFAR-10 (../shared/data; skipped when absent): eq. 8's eigenvalues saturate
before the Barlow variant's, and the claim check gives a verdict; the saturation rules on
synthetic curves; the accepted data layouts."""
import json
import math
import re

import numpy as np
import pytest

from repro import linear_regime
from repro.linear_regime import Settings, load_cifar10_train, saturation, verdict
from tests.conftest import SHARED_CIFAR

needs_cifar = pytest.mark.skipif(not SHARED_CIFAR.exists(),
                                 reason=f"real CIFAR-10 not available at {SHARED_CIFAR} (only on development/CI machines)")


def curves(eigenvalue_rows, lr=0.5, every=10):
    return {"t": [i * every * lr for i in range(len(eigenvalue_rows))], "loss": [1.0] * len(eigenvalue_rows),
            "eigenvalues": eigenvalue_rows}


@pytest.mark.parametrize("variant", sorted(linear_regime.VARIANTS))
def test_output_space_steps_equal_gradient_descent_on_the_weights(variant):
    """train_linear steps z with the Gram matrix; plain autograd steps on the weights w (z = x w),
    from the same initial weights, must give the same loss and eigenvalue curves."""
    import torch
    settings = Settings(dim=3, lr=0.5, t_max=20.0, record_every=4, init_scale=0.1)
    generator = torch.Generator().manual_seed(5)
    x1, x2 = (torch.randn(40, 12, generator=generator, dtype=torch.float64) / 4 for _ in range(2))
    loss_fn = linear_regime.VARIANTS[variant][1]
    fast = linear_regime.train_linear(x1, x2, loss_fn, settings)

    init = torch.Generator().manual_seed(settings.seed)
    w1, w2 = (torch.randn(12, 3, generator=init, dtype=torch.float64) * settings.init_scale for _ in range(2))
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    losses, eigenvalues = [], []
    for step in range(settings.steps + 1):
        z1, z2 = x1 @ w1, x2 @ w2
        loss, _ = loss_fn(z1, z2)
        if step % settings.record_every == 0 or step == settings.steps:
            losses.append(loss.item())
            eigenvalues.append(torch.linalg.eigvalsh((z1.T @ z1 / 40).detach()).flip(0).tolist())
        if step == settings.steps:
            break
        g1, g2 = torch.autograd.grad(loss, (w1, w2))
        with torch.no_grad():
            w1 -= settings.lr * g1
            w2 -= settings.lr * g2
    assert fast["t"] == [i * settings.record_every * settings.lr for i in range(len(losses))]
    assert np.allclose(fast["loss"], losses, rtol=1e-9, atol=1e-12)
    assert np.allclose(fast["eigenvalues"], eigenvalues, rtol=1e-9, atol=1e-12)
    assert not np.allclose(eigenvalues[0], eigenvalues[-1])   # the run moved: the comparison has content


def test_saturation_and_verdict_rules():
    settings = Settings(lr=0.5, record_every=10)
    fast = [[1e-6, 1e-6]] + [[1.0, 0.8]] * 19                   # flat from the second record (t = 5)
    slow = [[1e-6, 1e-6]] * 10 + [[1.0, 0.9]] * 10              # jumps at record 10 (t = 50)
    still_rising = [[1e-6, 10 ** (-6 + i / 4)] for i in range(20)]  # never flat: not saturated
    s_fast, s_slow, s_rising = (saturation(curves(c), settings) for c in (fast, slow, still_rising))
    assert s_fast["saturation_t_top"] == 5.0 and s_fast["saturation_step_top"] == 10
    assert s_slow["saturation_t_top"] == 50.0
    assert not s_rising["plateau"] and s_rising["saturation_t_top"] == math.inf
    assert verdict({"eq8": s_fast, "barlow": s_slow})["status"] == "PASS"
    assert verdict({"eq8": s_slow, "barlow": s_fast})["status"] == "FAIL"
    assert verdict({"eq8": s_fast, "barlow": s_rising})["status"] == "PASS"     # Barlow never saturated
    assert verdict({"eq8": s_rising, "barlow": s_fast})["status"] == "FAIL"


@needs_cifar
@pytest.mark.needs_data
def test_figure2_on_real_cifar10_gives_a_verdict(tmp_path):
    # the paper's 1024 images and model; t up to 600 instead of 2500 (eq. 8 saturates near t = 220,
    # so its last quarter, t 450-600, is the flat window the rule needs; Barlow has not saturated)
    settings = Settings(t_max=600.0, record_every=20)
    result = linear_regime.run(SHARED_CIFAR, tmp_path, settings)
    assert result["verdict"]["status"] in ("PASS", "FAIL") and result["verdict"]["detail"]
    eq8, barlow = result["summary"]["eq8"], result["summary"]["barlow"]
    assert result["verdict"]["status"] == "PASS", result["verdict"]
    assert eq8["plateau"] and eq8["saturation_t_top"] < 400          # all ten jumps are over early
    assert barlow["saturation_t_top"] > eq8["saturation_t_top"]
    assert len(eq8["final_eigenvalues"]) == 10 and min(eq8["final_eigenvalues"]) > 0.3
    assert eq8["final_loss"] < result["curves"]["eq8"]["loss"][0]
    saved = json.loads((tmp_path / "figure2.json").read_text())
    assert saved["verdict"] == result["verdict"] and (tmp_path / "figure2.png").stat().st_size > 10_000
    assert "within a factor 0.5 of its final value" in saved["definition_saturated"]


@needs_cifar
@pytest.mark.needs_data
def test_cifar10_layouts_give_the_same_images(cifar10_root, tmp_path):
    """torchvision's pickle files and an image folder are read; the sample is seeded."""
    from PIL import Image
    images = load_cifar10_train(cifar10_root, 64, seed=1)
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, load_cifar10_train(cifar10_root / "cifar-10-batches-py", 64, seed=1))
    folder = tmp_path / "folder"
    for i, image in enumerate(images):
        (folder / "train" / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "train" / f"class{i % 3}" / f"{i:04d}.png")
    assert load_cifar10_train(folder, 64, seed=0).shape == (64, 32, 32, 3)
    with pytest.raises(Exception, match="no CIFAR-10 training images"):
        load_cifar10_train(tmp_path / "empty", 10)


@needs_cifar
@pytest.mark.needs_data
@pytest.mark.slow
def test_figure2_defaults_full_run(tmp_path):
    """The documented default run (t up to 2500; its timing is in docs/measurements.md): eq. 8
    saturates several times earlier."""
    result = linear_regime.run(SHARED_CIFAR, tmp_path)
    eq8, barlow = result["summary"]["eq8"], result["summary"]["barlow"]
    assert result["verdict"]["status"] == "PASS"
    assert eq8["plateau"] and barlow["plateau"]
    assert barlow["saturation_t_top"] > 3 * eq8["saturation_t_top"]


def test_the_documented_saturation_rule_is_the_one_the_code_uses():
    """The band and plateau rule stated in the docstrings of repro/spectra.py and
    repro/linear_regime.py and in expected_results/figure2.yaml are the defaults of Settings
    (a 0.9 band was once stated for Figure 2 while the code used 0.5)."""
    import yaml

    from repro import spectra
    from repro.check import EXPECTED_DIR
    settings = Settings()
    assert f"Figure 2 uses band {settings.band} and smooth 1" in " ".join(spectra.__doc__.split())
    assert f"factor `band` = {settings.band} of its final value" in linear_regime.__doc__
    metric = " ".join(yaml.safe_load((EXPECTED_DIR / "figure2.yaml").read_text())["metric"].split())
    assert f"within a factor {settings.band} of its final value" in metric
    assert f"not flat ({settings.plateau_tolerance:.0%}) over its last {settings.plateau_window:.0%}" in metric
    protocol = yaml.safe_load((EXPECTED_DIR / "figure2.yaml").read_text())["protocol"]
    stated = re.search(r"(\d+) images, two (\d+)x\d+ crops, d=(\d+), init std ([\d.e-]+), lr ([\d.]+), "
                       r"t up to (\d+)", protocol).groups()
    assert [float(x) for x in stated] == [settings.num_images, settings.crop, settings.dim, settings.init_scale,
                                          settings.lr, settings.t_max]
