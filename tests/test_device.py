"""The GPU's performance switches, run on CPU: bf16 autocast, channels-last and torch.compile each
train a tiny FroSSL model for a few steps and are compared with the fp32 eager NCHW reference.

Tolerances. The first step starts from identical weights on an identical batch, so its loss differs
only by rounding: fp32 switches reorder sums (unit roundoff 6e-8; the loss of this ~25-layer net
stays within 1e-5 relative), bf16 rounds activations to 8 significant bits (unit roundoff 3.9e-3,
compounded over ~25 layers: about 2e-2 if the errors add like a random walk, 0.1 if they all add
up; the width-16 model's first loss measured 2.2-2.5% off, so 5e-2 relative). The weights after a few steps cannot be held to rounding:
FroSSL normalises the embeddings (mean, std, trace), so the loss is scale-invariant and its
gradient is a difference of nearly cancelling terms that amplifies rounding by orders of magnitude,
and the steps compound it. So the updates are compared in direction: cosine(update, reference update) above 0.95 for fp32
switches and above 0.5 for bf16; an update on another batch, or a missing step, scores near 0.
"""
import pytest
import torch

from repro.cli import UserError
from repro.config import load_config
from repro.device import DeviceSetup, strided_pointwise_hazard, use_bf16, use_channels_last
from repro.distributed import DistEnv
from repro.models import resnet18
from repro.train import Pretrainer, build_model, compile_forward

CPU = torch.device("cpu")
# width 16: the smallest whose channels-last backward oneDNN handles on every CPU (test below)
TINY = ["model.width=16", "model.proj_hidden_dim=64", "model.proj_output_dim=32", "device=cpu", "data.batch_size=16"]
STEPS = 3


def test_auto_switches_follow_the_gpu_recipe_and_explicit_ones_hold_on_cpu():
    cuda = torch.device("cuda", 0)
    assert use_bf16(cuda, "auto") and not use_bf16(CPU, "auto") and use_bf16(CPU, "bf16")
    assert not use_bf16(cuda, "fp32")
    assert use_channels_last(cuda, "auto") and use_channels_last(CPU, "auto")
    assert not use_channels_last(torch.device("meta"), "auto") and use_channels_last(torch.device("meta"), True)
    assert not use_channels_last(CPU, False) and not use_channels_last(cuda, False)
    with pytest.raises(UserError, match="train.precision"):
        use_bf16(CPU, "fp16")
    # the config's default "auto": channels-last on the CPU as on CUDA; an explicit false holds
    assert DeviceSetup.from_config(load_config(None, ["device=cpu"])).channels_last
    assert not DeviceSetup.from_config(load_config(None, ["device=cpu", "model.channels_last=false"])).channels_last
    with pytest.raises(UserError, match="model.channels_last"):
        load_config(None, ["model.channels_last=sometimes"])


def test_channels_last_is_kept_off_the_cpu_backward_that_onednn_mishandles(capsys):
    # oneDNN's strided 1x1 convolution with < 16 input channels in nhwc (uxlfoundation/oneDNN#6035):
    # ResNet18's downsample convolutions have width, 2x and 4x width input channels
    assert strided_pointwise_hazard(resnet18(width=8)) == "layer2.0.downsample.0 (8 input channels)"
    assert strided_pointwise_hazard(resnet18(width=4, cifar_stem=True)).startswith("layer2.0.downsample.0")
    assert strided_pointwise_hazard(resnet18(width=16)) is None and strided_pointwise_hazard(resnet18()) is None
    narrow = resnet18(width=8)
    auto = DeviceSetup.create("cpu").for_model(narrow)
    assert not auto.channels_last and "NCHW on the CPU" in capsys.readouterr().err
    assert DeviceSetup.create("cpu").for_model(resnet18(width=16)).channels_last   # the others keep it
    with pytest.raises(UserError, match=r"model.channels_last=true on the CPU: layer2.0.downsample.0 .*oneDNN#6035"):
        DeviceSetup.create("cpu", channels_last=True).for_model(narrow)
    # not the CPU: the setup is unchanged (the fault is oneDNN's, the CPU backend's)
    other = DeviceSetup(torch.device("meta"), bf16=False, channels_last=True, channels_last_asked=True)
    assert other.for_model(narrow) is other
    # the trainer goes through it: the width-8 model trains in NCHW on the CPU under `auto`
    cfg = load_config(None, TINY + ["model.width=8"])
    method, _, _, setup = build_model(cfg, DeviceSetup.from_config(cfg), DistEnv())
    assert not setup.channels_last and not method.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(UserError, match="no CUDA GPU is visible: use device=cpu"):
        DeviceSetup.create("cuda")


def test_channels_last_batches_and_weights_keep_their_values():
    setup = DeviceSetup.create("cpu", channels_last=True)
    images = torch.randn(4, 3, 8, 8)
    moved = setup.images(images)
    assert moved.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous(
        memory_format=torch.channels_last)
    assert torch.equal(moved, images)
    conv = setup.module(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with setup.autocast():
        assert conv(moved).dtype == torch.float32   # fp32 unless bf16 is asked for
    with DeviceSetup.create("cpu", precision="bf16").autocast():
        assert conv(moved).dtype == torch.bfloat16


def _batches(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [([torch.randn(16, 3, 16, 16, generator=g) for _ in range(2)], torch.randint(0, 10, (16,), generator=g))
            for _ in range(STEPS)]


def _train_steps(setup: DeviceSetup, *, compiled: bool = False, data_seed: int = 1):
    """The trainer's step (its model, optimizer, batch move, autocast): losses and the total update."""
    cfg = load_config(None, TINY)
    method, classifier, optimizer, setup = build_model(cfg, setup, DistEnv())
    model = Pretrainer(method, classifier).train()
    start = torch.cat([p.detach().float().flatten().clone() for p in model.parameters()])
    forward = compile_forward(model, compiled)
    losses = []
    for views, labels in _batches(data_seed):
        views, labels = setup.batch(views, labels)
        with setup.autocast():
            loss, _ = forward(views, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    update = torch.cat([p.detach().float().flatten() for p in model.parameters()]) - start
    return losses, update


@pytest.fixture(scope="module")
def reference():
    return _train_steps(DeviceSetup.create("cpu", precision="fp32", channels_last=False))


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


@pytest.mark.parametrize("precision, channels_last, loss_rtol, min_cosine", [
    ("fp32", True, 1e-5, 0.95),
    ("bf16", False, 5e-2, 0.5),
    ("bf16", True, 5e-2, 0.5),
])
def test_gpu_switches_train_like_fp32_eager(reference, precision, channels_last, loss_rtol, min_cosine):
    setup = DeviceSetup.create("cpu", precision=precision, channels_last=channels_last)
    losses, update = _train_steps(setup)
    ref_losses, ref_update = reference
    assert losses[0] == pytest.approx(ref_losses[0], rel=loss_rtol)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert _cosine(update, ref_update) > min_cosine, _cosine(update, ref_update)


def test_the_direction_check_fails_for_a_wrong_update(reference):
    # the tolerance's control: the same steps on other batches point elsewhere
    _, other = _train_steps(DeviceSetup.create("cpu", precision="fp32", channels_last=False), data_seed=2)
    assert _cosine(other, reference[1]) < 0.5


def test_compiled_step_trains_like_eager(reference, monkeypatch):
    # aot_eager: dynamo's capture of the whole step and AOT autograd's functionalised backward (where a
    # method's state updates could go wrong), without inductor's C++ build, minutes on two cores;
    # test_compiled_step_with_inductor runs the default backend.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend="aot_eager"))
    torch._dynamo.reset()
    losses, update = _train_steps(DeviceSetup.create("cpu", precision="fp32", channels_last=False), compiled=True)
    assert losses[0] == pytest.approx(reference[0][0], rel=1e-5)
    assert _cosine(update, reference[1]) > 0.95


@pytest.mark.slow
def test_compiled_step_with_inductor_trains_like_eager(reference):
    torch._dynamo.reset()
    losses, update = _train_steps(DeviceSetup.create("cpu", precision="fp32", channels_last=False), compiled=True)
    assert losses[0] == pytest.approx(reference[0][0], rel=1e-5)
    assert _cosine(update, reference[1]) > 0.95
