"""The FFCV two-view loader: damaged files, views, reproducibility, ranks, the build_loader branch,
and its augmentations against the torchvision path (the converters: tests/test_data_prep.py).
Data-dependent tests skip when ../shared/data is absent.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from repro.cli import UserError
from repro.config import load_config
from repro.data import build_loader
from repro.data.augment import AUGMENTATION_SETS, TwoViews, mean_std
from repro.data.ffcv_loader import FFCVTwoViewLoader, sample_uniforms
from tests.cifar_fixture import COORDS, NOISE, converted, converted_cifar100, coordinate_image

pytest.importorskip("ffcv")
# numba's note that the crop stage's object-mode block (it reads the epoch key) is not parallel
pytestmark = pytest.mark.filterwarnings("ignore:Code running in object mode:numba.core.errors.NumbaWarning")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return converted_cifar100(tmp_path_factory.mktemp("cifar100"))


def test_truncated_or_corrupt_beton_is_a_one_line_error_naming_the_rebuild(cifar100, tmp_path):
    root, _, _ = cifar100
    good = (root / "ffcv" / "cifar100_train.beton").read_bytes()
    (tmp_path / "ffcv").mkdir()
    path = tmp_path / "ffcv" / "cifar100_train.beton"
    cfg = load_config(None, ["data.dataset=cifar100", f"data.root={tmp_path}", "data.batch_size=64"])
    garbled = bytearray(good)
    garbled[0:64] = os.urandom(64)
    for damaged in (good[: len(good) // 3], good[:-10], bytes(garbled)):
        path.write_bytes(damaged)
        with pytest.raises(UserError) as err:
            build_loader(cfg.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                         seed=0)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "truncated or corrupt" in message
        assert f"python -m data_prep.write_cifar --dataset cifar100 --root {tmp_path} --splits train" in message


# ---- the loader ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noise_loaders(cifar100):
    """FFCV loaders over the noise images: one process, and the two ranks of a 2-process run."""
    root, _, _ = cifar100
    args = dict(dataset="cifar100", augmentations="symmetric", image_size=32, batch_size=64, seed=3,
                indices=np.arange(NOISE), num_workers=2)
    path = root / "ffcv" / "cifar100_train.beton"
    single = FFCVTwoViewLoader(path, **args)
    ranks = [FFCVTwoViewLoader(path, rank=r, world_size=2, **args) for r in range(2)]
    return single, ranks


def test_two_views_differ_and_batches_are_reproducible(noise_loaders, cifar100):
    single, _ = noise_loaders
    _, _, labels = cifar100
    assert len(single) == NOISE // 64 and len(single.dataset) == NOISE
    epoch0 = [(v[0].clone(), v[1].clone(), y.clone()) for v, y in single.epoch(0)]
    assert len(epoch0) == 4
    first_view, second_view, batch_labels = epoch0[0]
    assert first_view.shape == second_view.shape == (64, 3, 32, 32) and first_view.dtype == torch.float32
    assert all(not torch.equal(a, b) for a, b in zip(first_view, second_view))  # every pair differs
    assert torch.equal(batch_labels, torch.as_tensor(labels["train"][single.batches(0)[0]]))
    again = [(v[0], v[1], y) for v, y in single.epoch(0)]
    assert all(torch.equal(a, b) for old, new in zip(epoch0, again) for a, b in zip(old, new))
    resumed = [(v[0], v[1], y) for v, y in single.epoch(0, start_batch=2)]  # mid-epoch resume
    assert all(torch.equal(a, b) for old, new in zip(epoch0[2:], resumed) for a, b in zip(old, new))
    other_epoch = next(iter(single.epoch(1)))[0][0]
    assert not torch.equal(other_epoch, first_view)


def test_ranks_see_disjoint_halves_that_cover_each_global_batch(noise_loaders):
    single, ranks = noise_loaders
    for b, whole in enumerate(single.batches(5)):
        halves = [r.batches(5)[b] for r in ranks]
        assert len(halves[0]) == len(halves[1]) == 32 and not set(halves[0]) & set(halves[1])
        assert np.array_equal(np.concatenate(halves), whole)
    assert sorted(np.concatenate(single.batches(5)).tolist()) == list(range(NOISE))
    # an image's views do not depend on the rank: the halves are the single process's batch
    whole_views, _ = next(iter(single.epoch(5)))
    for r, rank in enumerate(ranks):
        views, _ = next(iter(rank.epoch(5)))
        for v in range(2):
            assert torch.equal(views[v], whole_views[v][32 * r:32 * (r + 1)])


def test_same_order_as_the_torchvision_loader(noise_loaders):
    from repro.data import Loader

    single, _ = noise_loaders
    reference = Loader(list(range(NOISE)), batch_size=64, shuffle=True, drop_last=True, num_workers=0, seed=3)
    assert [b.tolist() for b in single.batches(2)] == reference.batches(2)


def test_build_loader_takes_the_ffcv_path_when_the_beton_exists(cifar100, tmp_path, capsys):
    root, _, _ = cifar100
    cfg = load_config(None, ["data.dataset=cifar100", f"data.root={root}", "data.batch_size=64",
                             "data.num_workers=1"])
    loader = build_loader(cfg.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                          seed=0, subset=128)
    lines = capsys.readouterr().err.strip().splitlines()
    assert isinstance(loader, FFCVTwoViewLoader) and len(lines) == 1 and "FFCV two-view loader" in lines[0]
    assert len(loader) == 2 and len(loader.dataset) == 128
    (view, _), labels = next(iter(loader.epoch(0)))
    assert view.shape == (64, 3, 32, 32) and labels.shape == (64,)
    # no .beton there: the torchvision path, one line naming the command that builds the file
    empty = load_config(None, ["data.dataset=cifar100", f"data.root={tmp_path}", "data.download=false"])
    with pytest.raises(UserError):  # (and no CIFAR-100 files either)
        build_loader(empty.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                     seed=0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "torchvision two-view loader" in lines[0]
    assert "python -m data_prep.write_cifar --dataset cifar100" in lines[0]
    forced = load_config(None, ["data.dataset=cifar100", f"data.root={tmp_path}", "data.loader=ffcv"])
    with pytest.raises(UserError, match="does not exist: build it with"):
        build_loader(forced.data, device=CPU, split="train", views="two", shuffle=True, drop_last=True,
                     seed=0)


# ---- augmentation statistics against the torchvision path ------------------------------------------

def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int, alpha_coefficient: float = 1.95) -> float:
    """Two-sample KS critical value at alpha = 0.001."""
    return alpha_coefficient * np.sqrt((n + m) / (n * m))


def ks_up_to_rounding(a: np.ndarray, b: np.ndarray, levels: float = 1.5) -> float:
    """KS statistic allowing a constant offset of up to `levels` grey levels: PIL rounds every step
    to uint8 (and truncates in its blends), which shifts per-image statistics by a fraction of a
    level, enough for KS to notice on 1,000 samples; the float path does not."""
    return min(ks_statistic(a + shift, b) for shift in np.linspace(-levels, levels, 31) / 255)


def test_crop_parameters_match_torchvision():
    from torchvision import transforms as T

    from repro.data import _ffcv_kernels as kernels

    n, rng = 4000, np.random.default_rng(0)
    ours = np.array([kernels.random_resized_crop(np.uint64(k), 32, 32, 0.08, 1.0, np.log(3 / 4), np.log(4 / 3))
                     for k in rng.integers(0, 2**63, n)])
    torch.manual_seed(0)
    image = torch.zeros(3, 32, 32)
    theirs = np.array([T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)])
    for column in (lambda p: p[:, 2] * p[:, 3] / 1024, lambda p: p[:, 3] / p[:, 2], lambda p: p[:, 0], lambda p: p[:, 1]):
        assert ks_statistic(column(ours), column(theirs)) < ks_critical(n, n)
    area = ours[:, 2] * ours[:, 3] / 1024
    assert area.min() >= 0.06 and area.max() == 1.0


def test_resized_crop_matches_pil_bicubic():
    from repro.data import _ffcv_kernels as kernels

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    for top, left, height, width, flip in [(0, 0, 32, 32, False), (3, 5, 10, 17, True), (20, 1, 12, 30, False)]:
        out = np.zeros((32, 32, 3), np.uint8)
        kernels.resized_crop(image, top, left, height, width, flip, out)
        pil = Image.fromarray(image).crop((left, top, left + width, top + height)).resize((32, 32), Image.BICUBIC)
        expected = np.asarray(pil)[:, ::-1] if flip else np.asarray(pil)
        assert np.abs(out.astype(int) - expected).max() <= 1


def test_hash_stream_is_the_same_in_numpy_and_numba():
    from repro.data import _ffcv_kernels as kernels

    key, indices = 2**63 + 12345, np.array([0, 7, 49_999])
    ours = sample_uniforms(key, indices, view=1, count=5)
    compiled = [[kernels.uniform(np.uint64(kernels.sample_key(np.uint64(key), np.uint64(i), 1)), c)
                 for c in range(5)] for i in indices]
    assert np.array_equal(ours, np.array(compiled))
    many = sample_uniforms(7, np.arange(20_000), view=0, count=2)
    assert 0 <= many.min() and many.max() < 1 and abs(many.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(many[:, 0], many[:, 1])[0, 1]) < 0.03


def _unnormalise(view: torch.Tensor, dataset: str = "cifar100") -> np.ndarray:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std(dataset))
    return (view * std + mean).numpy()


def _view_stats(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Per view: gray (all channels equal), mean level, contrast, colourfulness."""
    spread = np.abs(pixels[:, 0] - pixels[:, 1]).max(axis=(1, 2)) + np.abs(pixels[:, 1] - pixels[:, 2]).max(axis=(1, 2))
    stats = {"mean": pixels.mean(axis=(1, 2, 3)), "std": pixels.std(axis=(1, 2, 3)),
             "colour": np.abs(pixels - pixels.mean(axis=1, keepdims=True)).mean(axis=(1, 2, 3))}
    # rounded: gray views are colour 0 up to float noise (1e-9 vs 0 would make two atoms for KS)
    return {"gray": spread < 1e-4, **{key: np.round(value, 5) for key, value in stats.items()}}


def test_augmentation_distributions_match_the_torchvision_path(cifar100):
    """Same noise images, full `symmetric` CIFAR augmentations, 1024 x 2 views from each path."""
    root, images, _ = cifar100
    loader = FFCVTwoViewLoader(root / "ffcv" / "cifar100_train.beton", dataset="cifar100",
                               augmentations="symmetric", image_size=32, batch_size=256, seed=11,
                               indices=np.arange(NOISE), num_workers=2)
    ffcv_views = [np.concatenate([_unnormalise(views[v]) for epoch in range(4) for views, _ in loader.epoch(epoch)])
                  for v in range(2)]
    two_views = TwoViews("symmetric", 32, "cifar100")
    torch.manual_seed(0)
    pil_images = [Image.fromarray(image) for image in images["train"][:NOISE]]
    tv_pairs = [two_views(image) for _ in range(4) for image in pil_images]
    tv_views = [np.stack([_unnormalise(pair[v][None])[0] for pair in tv_pairs]) for v in range(2)]
    n = len(tv_pairs)
    for v in range(2):
        ours, theirs = _view_stats(ffcv_views[v]), _view_stats(tv_views[v])
        for fraction in (ours["gray"].mean(), theirs["gray"].mean()):
            assert abs(fraction - 0.2) < 0.05, fraction  # grayscale p = 0.2 (binomial sd 0.0125)
        for key in ("mean", "std", "colour"):
            assert ks_up_to_rounding(ours[key], theirs[key]) < ks_critical(n, n), key
    # the test has power: the weaker jitter of another set is told apart
    weak = TwoViews("symmetric_weak", 32, "cifar100")
    weak_views = np.stack([_unnormalise(weak(image)[0][None])[0] for _ in range(4) for image in pil_images])
    assert ks_up_to_rounding(_view_stats(ffcv_views[0])["std"], _view_stats(weak_views)["std"]) > ks_critical(n, n)


def test_per_image_independence_on_identical_images(cifar100):
    """256 copies of one image in a batch: each image and each view draws its own parameters."""
    root, _, _ = cifar100
    loader = FFCVTwoViewLoader(root / "ffcv" / "cifar100_train.beton", dataset="cifar100",
                               augmentations="symmetric", image_size=32, batch_size=COORDS, seed=5,
                               indices=NOISE + np.arange(COORDS), num_workers=2)
    (first, second), _ = next(iter(loader.epoch(0)))
    stats = [_view_stats(_unnormalise(view)) for view in (first, second)]
    assert 0.1 < stats[0]["gray"].mean() < 0.3  # per-image decisions, not one per batch
    assert len({view.numpy().tobytes() for view in first}) == COORDS  # every view its own
    for key in ("mean", "colour"):
        assert abs(np.corrcoef(stats[0][key], stats[1][key])[0, 1]) < 0.2  # view 1 vs view 2
        assert abs(np.corrcoef(stats[0][key][:-1], stats[0][key][1:])[0, 1]) < 0.2  # neighbours

    # crop stage alone: the box read off the coordinate channels, flips from the column order
    crops = np.concatenate([c[:, 0].copy() for epoch in range(4) for c, _, _ in loader.crops(epoch)])
    columns, rows = crops[..., 0].astype(float), crops[..., 1].astype(float)
    area = ((np.ptp(columns, axis=(1, 2)) / 8 + 1) * (np.ptp(rows, axis=(1, 2)) / 8 + 1)) / 1024
    flipped = (columns[:, :, -1] < columns[:, :, 0]).mean(axis=1) > 0.5
    from torchvision import transforms as T

    torch.manual_seed(0)
    crop = T.Compose([T.RandomResizedCrop(32, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip()])
    source = Image.fromarray(coordinate_image())
    reference = np.stack([np.asarray(crop(source)) for _ in range(len(crops))]).astype(float)
    reference_area = ((np.ptp(reference[..., 0], axis=(1, 2)) / 8 + 1)
                      * (np.ptp(reference[..., 1], axis=(1, 2)) / 8 + 1)) / 1024
    assert ks_statistic(area, reference_area) < ks_critical(len(area), len(reference_area))
    assert 0.04 < area.min() < 0.15 and area.max() > 0.95
    assert abs(flipped.mean() - 0.5) < 0.07


# ---- the colour steps against torchvision's functional ops ------------------------------------------

def test_colour_steps_equal_torchvision_functional_ops():
    import torchvision.transforms.functional as TF

    from repro.data import gpu_augment as aug

    x = torch.rand(6, 3, 16, 16)
    factors = torch.linspace(0.2, 1.8, 6)
    shifts = torch.linspace(-0.5, 0.5, 6)
    for ours, theirs, values in [(aug.adjust_brightness, TF.adjust_brightness, factors),
                                 (aug.adjust_contrast, TF.adjust_contrast, factors),
                                 (aug.adjust_saturation, TF.adjust_saturation, factors),
                                 (aug.adjust_hue, TF.adjust_hue, shifts)]:
        expected = torch.stack([theirs(x[i], float(values[i])) for i in range(6)])
        assert torch.allclose(ours(x.clone(), values), expected, atol=1e-5), ours.__name__
    assert torch.equal(aug.to_grayscale(x.clone()), TF.rgb_to_grayscale(x, 3))
    levels = torch.randint(0, 256, (6, 3, 16, 16)).float() / 255
    assert torch.equal(aug.solarize(levels.clone()), TF.solarize(levels, 128 / 255))


def test_each_colour_step_gives_an_image_the_same_values_in_any_batch():
    # a rank augments its half of the global batch, and _apply_to a step's images of it: an image's
    # values must not depend on the batch's size (a BLAS product blocks by it; found on an AVX-512
    # Xeon, where adjust_contrast's matrix-vector product gave 1-ulp differences at some sizes)
    from repro.data import gpu_augment as aug

    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 32, 32, generator=g)
    factors, sigma = torch.rand(40, generator=g) * 1.6 + 0.2, torch.rand(40, generator=g) * 1.9 + 0.1
    for step, args in [(aug.adjust_brightness, (factors,)), (aug.adjust_contrast, (factors,)),
                       (aug.adjust_saturation, (factors,)), (aug.adjust_hue, (factors - 1,)),
                       (aug.to_grayscale, ()), (aug.gaussian_blur, (sigma,)), (aug.solarize, ())]:
        whole = step(x.clone(), *args)
        for cut in (1, 3, 17, 33):
            parts = torch.cat([step(x[:cut].clone(), *(a[:cut] for a in args)),
                               step(x[cut:].clone(), *(a[cut:] for a in args))])
            assert torch.equal(parts, whole), (step.__name__, cut)


def test_blur_matches_pil_gaussian_blur():
    from PIL import ImageFilter

    from repro.data.gpu_augment import gaussian_blur

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    ours = gaussian_blur(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, sigma)
    for i in range(4):
        pil = Image.fromarray(pixels[i]).filter(ImageFilter.GaussianBlur(radius=float(sigma[i])))
        difference = np.abs(ours[i].permute(1, 2, 0).numpy() * 255 - np.asarray(pil))
        assert difference.max() <= 3.5 and difference.mean() <= 1.5  # PIL rounds between its box passes


def test_parameters_follow_the_augmentation_set():
    from repro.data.gpu_augment import NUM_DRAWS, draw_params

    view = AUGMENTATION_SETS["asymmetric"][1]  # solarization 0.2, no blur, jitter 0.4/0.4/0.2/0.1
    params = draw_params(view, torch.rand(100_000, NUM_DRAWS, generator=torch.Generator().manual_seed(0)))
    assert abs(params.jitter.float().mean() - 0.8) < 0.01 and abs(params.gray.float().mean() - 0.2) < 0.01
    assert abs(params.solarize.float().mean() - 0.2) < 0.01 and not params.blur.any()
    low, high = params.factors.min(0).values, params.factors.max(0).values
    assert torch.allclose(low, torch.tensor([0.6, 0.6, 0.8, -0.1]), atol=1e-3)
    assert torch.allclose(high, torch.tensor([1.4, 1.4, 1.2, 0.1]), atol=1e-3)
    orders = {tuple(o) for o in params.order[:2000].tolist()}
    assert len(orders) == 24  # every permutation of the four jitter steps occurs


@pytest.mark.needs_data
def test_training_runs_end_to_end_on_the_ffcv_loader(cifar10_root, accept_rebuilt_cifar, tmp_path, capsys):
    """`make data DATASET=cifar10` then `make train`: the trainer gets the FFCV loader (CPU)."""
    from repro.train import train
    from tests.test_train import cifar_config

    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-batches-py").symlink_to(cifar10_root / "cifar-10-batches-py")
    converted("write_cifar", "--dataset", "cifar10", "--root", root, "--splits", "train")
    cfg = cifar_config(root, tmp_path / "runs", "name=ffcv", "data.subset=256", "data.batch_size=64",
                       "optim.epochs=2", "optim.warmup_epochs=1", "train.log_every=2", "data.loader=ffcv")
    summary = train(cfg)
    assert "data: FFCV two-view loader for cifar10 train" in capsys.readouterr().err
    assert summary["steps"] == 8
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
