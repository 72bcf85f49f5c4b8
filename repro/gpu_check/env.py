"""What gpu_check finds before it runs anything: the packages the project needs (a one-line error
naming a missing one), which optional ones import, and the machine (driver, CUDA, GPUs, versions).
Only the standard library at import time: torch is imported once the preflight has found it."""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from repro.cli import UserError

ROOT = Path(__file__).resolve().parents[2]   # the repository (this file: repro/gpu_check/)
# what the trainer and the configs import unconditionally: without one of these nothing runs
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
            "yaml": "pyyaml", "tqdm": "tqdm"}
# optional module -> its distributions (the version reported is the installed distribution's:
# ffcv 1.0.2's __version__ still says 0.0.3rc1)
OPTIONAL = {"ffcv": ("ffcv",), "numba": ("numba",), "cv2": ("opencv-python", "opencv-python-headless"),
            "pytest": ("pytest",), "matplotlib": ("matplotlib",), "sklearn": ("scikit-learn",)}


def preflight() -> dict:
    """Required packages (a one-line error naming the missing one) and which optional ones import."""
    if sys.version_info < (3, 11):   # pyproject.toml: requires-python >= 3.11
        raise UserError(f"Python {platform.python_version()} is too old: the project needs 3.11 or newer")
    for module, package in REQUIRED.items():
        if importlib.util.find_spec(module) is None:
            hint = " (the project's configs are YAML)" if module == "yaml" else ""
            raise UserError(f"{package} is not installed{hint}: install it into this Python "
                            f"(`{Path(sys.executable).name} -m pip install {package}`, or a wheel copied to "
                            f"an offline node) or run `make gpu-check`, which uses the project's .venv")
    optional = {}
    for module, distributions in OPTIONAL.items():
        try:
            imported = importlib.import_module(module)
            optional[module] = next((v for v in map(distribution_version, distributions) if v),
                                    getattr(imported, "__version__", "present"))
        except Exception as err:   # absent, or present but broken (ffcv against a foreign numpy)
            optional[module] = None if isinstance(err, ImportError) and importlib.util.find_spec(module) is None \
                else f"broken: {type(err).__name__}: {err}"
    return optional


def distribution_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def nvidia_smi(*query: str) -> list[str] | None:
    """Rows of `nvidia-smi --query-gpu=...` (None when nvidia-smi is absent or fails)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().splitlines() if result.returncode == 0 else None


def environment(part, optional: dict, dry: bool) -> bool:
    """Fill `part` (a gpu_check.Part) with the machine; True when CUDA is usable."""
    import numpy
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count})
    smi = nvidia_smi("driver_version", "name", "memory.total")
    part.details = {
        "python": platform.python_version(), "executable": sys.executable,
        "virtualenv": sys.prefix != sys.base_prefix, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": numpy.__version__, "torch_cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "cuda_available": cuda,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "nccl": nccl_version() if cuda else None,
        "gpus": gpus, "driver": smi[0].split(",")[0].strip() if smi else None,
        "nvidia_smi": smi, "optional_packages": optional, "git_commit": git_commit(),
        "compiler_problem": compiler_problem(),
    }
    if cuda or dry:
        part.status = "passed"
        if not cuda:
            part.reason = "no CUDA device (dry mode: the CUDA parts are skipped)"
        return cuda
    part.status = "failed"
    part.reason = (f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
                   f"{torch.version.cuda or 'none: a CPU-only build'}; nvidia-smi: "
                   f"{'; '.join(smi) if smi else 'absent or failing'}); on a machine without a GPU use --dry-run")
    return False


def compiler_problem() -> str | None:
    """What torch.compile's Triton backend lacks here (it builds a launcher at run time with a C
    compiler, $CC or cc/gcc/clang, against Python.h), with the fix; None when both are present."""
    cc = os.environ.get("CC")
    compiler = shutil.which(cc) if cc else next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    missing = ([] if compiler else [f"no C compiler ({'CC=' + cc + ' not found' if cc else 'cc, gcc, clang'})"]) + \
        ([] if os.path.exists(header) else [f"no Python.h ({header})"])
    if not missing:
        return None
    version = "%d.%d" % sys.version_info[:2]
    return (f"{' and '.join(missing)}: torch.compile's Triton backend compiles a launcher at run time with both; "
            f"install them (`apt-get install gcc python{version}-dev`, or `module load gcc` and a Python module "
            f"with headers on a cluster, or set CC=/path/to/gcc), then rerun with --only bench_compile")


def nccl_version() -> str | None:
    """NCCL's version as torch reports it (a tuple in recent releases, an int in older ones)."""
    try:
        import torch

        version = torch.cuda.nccl.version()
    except Exception:   # a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
