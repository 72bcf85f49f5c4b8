"""Tiny end-to-end runs of the paper-experiment targets that tests/test_targets.py checks only with
`make -n`: figure3, figure4, ablation and all. Each test runs the Make target itself (`make TARGET`
with the Makefile's variables: METHODS, DATASETS, EPOCHS, OVERRIDES, ...) on tiny data written in
the real on-disk formats in a temporary folder, and ends with the check of its own rows (the
`check_<target>` table the target saves) read back against the result files it wrote:

* STL-10: the binary release's files (`stl10_binary/{train,test,unlabeled}_X.bin`, `*_y.bin`),
  written by tests/test_data.py's helper (also used by tests/test_ffcv.py);
* ImageNet: an image folder of small JPEGs, `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`.

The written STL-10 files are not the originals, so torchvision's md5 check refuses them; the
subprocesses get a `sitecustomize.py` (tests/integrity_shim.py, on PYTHONPATH) that switches off that one check
(`STL10._check_integrity`), the counterpart of tests/test_data.py's monkeypatch for a process
tree. Nothing else in the code path is replaced.

The targets share one output folder: a run that one target trained is skipped by the next
("trained (done), skipped"), as the targets do for a user, so `make all` (which covers figure2,
table2, table3, figure3, figure4, the full check and `make report`'s renderer) reuses the runs of
the tests before it. Every test also passes alone (it then trains what it needs).

Slow tests (`make test-slow`): `make all` itself (each of its parts runs in the default run), and
figure3 and figure4 again with PREPARE_DATA=auto, the Makefile's default: FFCV files written and
trained on (numba compiles the loader in every process). `make figure2` itself is not run here: at
its paper settings it costs the same CPU whatever the data (tests/test_targets.py::test_make_figure2_end_to_end,
slow, runs it). The durations of every test are printed by `make test`.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.integrity_shim import STL10, write_shim
from tests.test_data import _write_stl10

# The same tiny model for every run (so `make all` finds the other targets' runs): width-8
# ResNet18, small projector (>= 14 outputs: Figure 3 tracks 14 eigenvalues), batch 16 (>= 15
# centred samples: lambda_14 of the batch covariance is not zero), one probe epoch; the datasets'
# own resolutions (STL-10 96 px, ImageNet 224 px), one loader process.
TINY = ("model.width=8 model.proj_hidden_dim=32 model.proj_output_dim=16 "
        "data.batch_size=16 data.num_workers=0 device=cpu train.log_every=1 "
        "eval.probe_epochs=1 eval.probe_batch_size=16 eval.knn_k=5")
EPOCHS = "3"   # Table 3's first column is epoch 3

def write_image_folder(root: Path, classes: int = 4, train: int = 8, val: int = 4, side: int = 40) -> None:
    """ImageNet's layout: <root>/{train,val}/<wnid>/<name>.JPEG, small RGB JPEGs; each class has
    its own mean colour (so a probe has something to find), plus noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        wnid = f"n{1440764 + c:08d}"
        colour = rng.uniform(40, 215, size=3)
        for split, count in (("train", train), ("val", val)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = colour + rng.normal(0, 40, size=(side, side + 8, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                    folder / f"{wnid}_{split}_{i}.JPEG", format="JPEG", quality=90)


def write_cifar10_batches(root: Path, per_batch: int = 64) -> None:
    """torchvision's CIFAR-10 layout (<root>/cifar-10-batches-py/data_batch_1..5, test_batch,
    batches.meta: pickled dicts, rows of 3072 bytes, channel-major), smooth low-frequency images."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = np.empty((per_batch, 3, 32, 32))
        for k in range(per_batch):
            for c in range(3):
                fy, fx = rng.integers(0, 3, size=2)
                py, px = rng.uniform(0, 2 * np.pi, size=2)
                a, b = rng.uniform(-1, 1, size=2)
                images[k, c] = (128 + 60 * a * np.cos(np.pi * fy * rows + py) * np.cos(np.pi * fx * cols + px)
                                + 40 * b * (rows - cols))
        images += rng.normal(0, 8, size=images.shape)
        entry = {"batch_label": name, "labels": [k % 10 for k in range(per_batch)],
                 "data": images.clip(0, 255).astype(np.uint8).reshape(per_batch, 3072),
                 "filenames": [f"{name}_{k}.png" for k in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": per_batch, "num_vis": 3072}, f)


class Tiny:
    """The tiny data, the shared output folder and the variables every target gets."""

    def __init__(self, root: Path):
        self.root = root
        _write_stl10(root / "stl10", n_train=16, n_test=16, n_unlabeled=16)  # 32 images to pretrain on
        write_image_folder(root / "imagenet")
        write_cifar10_batches(root / "cifar10")
        # one thread per process: the model is tiny, and two OpenMP threads on two cores shared with
        # other processes wait on each other (seconds per step instead of milliseconds)
        self.env = {"PYTHONPATH": write_shim(root / "shim", STL10), "OMP_NUM_THREADS": "1"}
        self.out = root / "runs"
        self.results = self.out / "results"
        self.variables = [f"OUT={self.out}", f"DATA_DIR={root / 'stl10'}", f"IMAGENET_DIR={root / 'imagenet'}",
                          f"CIFAR10={root / 'cifar10'}", "PREPARE_DATA=none", f"EPOCHS={EPOCHS}", "SPECTRA_EVERY=1",
                          f"OVERRIDES={TINY}"]

    def make(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(["make", "--no-print-directory", *args, "SETUP=true"], capture_output=True,
                                text=True, cwd=ROOT, timeout=timeout, env={**os.environ, "MAKEFLAGS": "", **self.env})
        assert result.returncode == 0, f"make {' '.join(args)}: exit {result.returncode}\n" \
                                       f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result

    def target(self, target: str, *args: str) -> subprocess.CompletedProcess:
        return self.make(target, *self.variables, *args)

    def result(self, experiment: str) -> dict:
        """The result file the targets write for this variant: <experiment>-e3-x<hash>.json."""
        paths = sorted(self.results.glob(f"{experiment}-e{EPOCHS}-x*.json"))
        assert len(paths) == 1, paths
        return json.loads(paths[0].read_text())

    def check_rows(self, stem: str) -> list[dict]:
        """The rows of the check a target ended with (<results>/<stem>.json, saved by repro.check)."""
        return json.loads((self.results / f"{stem}.json").read_text())["rows"]

    def run_dir(self, prefix: str) -> Path:
        paths = sorted(p for p in self.out.glob(f"{prefix}-seed0-e{EPOCHS}-x*") if p.is_dir())
        assert len(paths) == 1, paths
        return paths[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Tiny(tmp_path_factory.mktemp("targets_e2e"))


def online(run_dir: Path) -> dict[int, dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {int(r["epoch"]): r for r in lines if "online_top1" in r}


def saved_config(run_dir: Path) -> dict:
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def assert_check_table_printed(stdout: str, rows: list[dict]) -> None:
    """The target's stdout ends with the check table: one line per row of the saved check."""
    lines = [line.split() for line in stdout.splitlines()]
    for row in rows:
        assert any(row["cell"] in line and line[-1] == row["status"] for line in lines), (row, stdout[-3000:])


def by_cell(rows: list[dict]) -> dict[str, dict]:
    return {r["cell"]: r for r in rows}


def test_figure3_tiny_end_to_end(tiny):
    """`make figure3` on STL-10 binaries: the four methods train with the Figure 3 protocol and the
    eigenvalue tracker; the result holds each row's condition number, entropy and saturation step
    computed from its spectra.jsonl; the check lists them and decides the three claims
    (NOT-COMPARABLE: 3 epochs and a tiny model)."""
    from repro.experiments.table import FIGURE3
    from repro.spectra import read_spectra, summarize

    run = tiny.target("figure3")
    result = tiny.result("figure3")
    assert result["variant"].startswith(f"EPOCHS={EPOCHS}, OVERRIDES#") and result["epochs_override"] == int(EPOCHS)
    assert result["missing_rows"] == {} and result["figure"].endswith(".png")
    assert (tiny.results / result["figure"]).stat().st_size > 10_000
    for row in FIGURE3.rows:
        run_dir = tiny.run_dir(f"figure3-stl10-{row}")
        config = saved_config(run_dir)
        # the Figure 3 protocol reached the trainer; EPOCHS and OVERRIDES came after it
        assert (config["optim"]["name"], config["optim"]["lr"], config["train"]["spectra_every"]) == ("sgd", 0.1, 1)
        assert (config["data"]["dataset"], config["data"]["train_split"]) == ("stl10", "train+unlabeled")
        assert config["optim"]["epochs"] == int(EPOCHS) and config["data"]["batch_size"] == 16
        assert (run_dir / "pretrain.json").exists()
        records = read_spectra(run_dir)
        assert [r["step"] for r in records] == list(range(int(EPOCHS) * 2))  # 32 images / 16, every step
        assert all(len(r["eigenvalues"]) == 14 for r in records)
        summary = summarize(records)
        for metric in ("condition_number", "entropy", "saturation_step"):
            cell = result["cells"][f"{metric}/{row}"]
            assert cell["value"] == pytest.approx(summary[metric]) and cell["n"] == 1
            assert cell["runs"] == [str(run_dir)] and not cell["comparable"]
            assert "optim.epochs: 5 -> 3" in cell["reason"]
        assert result["curves"][row]["step"] == [r["step"] for r in records]

    rows = tiny.check_rows("check_figure3")
    assert_check_table_printed(run.stdout, rows)
    cells = by_cell(rows)
    for name, cell in result["cells"].items():  # values without a printed paper number
        assert cells[name]["status"] == "NO-REFERENCE" and cells[name]["measured"] == pytest.approx(cell["value"])
    claims = [r for r in rows if r["paper"] == "claim"]
    assert sorted(r["cell"] for r in claims) == ["earliest_saturation", "highest_entropy", "lowest_condition_number"]
    assert all(r["status"] == "NOT-COMPARABLE" and r["measured"] in ("holds", "does not hold") for r in claims)
    entropy = {row: result["cells"][f"entropy/{row}"]["value"] for row in FIGURE3.rows}
    decided = cells["highest_entropy"]["measured"] == "holds"
    assert decided == all(entropy["frossl"] > v for row, v in entropy.items() if row != "frossl")


def test_figure4_tiny_end_to_end_and_make_report(tiny):
    """`make figure4` on an ImageNet-layout folder of JPEGs: FroSSL and Barlow Twins with the
    paper's recipe (SGD with restarts, online top-1/top-5 every epoch, Adam probe), shrunk; the
    result's cells are the probe's and the online classifier's numbers; the check compares them
    with the paper (NOT-COMPARABLE); `make report` renders them."""
    from repro.experiments.table import FIGURE4

    run = tiny.target("figure4")
    result = tiny.result("figure4")
    values = {}
    for row in FIGURE4.rows:
        run_dir = tiny.run_dir(f"imagenet-{row}")
        config = saved_config(run_dir)
        assert (config["data"]["dataset"], config["data"]["root"]) == ("imagefolder", str(tiny.root / "imagenet"))
        assert (config["optim"]["restart_epochs"], config["eval"]["probe_optimizer"]) == (15, "adam")
        probe = json.loads((run_dir / "eval_full.json").read_text())
        assert probe["probe"] == "full" and probe["checkpoint_epoch"] == int(EPOCHS)
        epochs = online(run_dir)
        assert sorted(epochs) == list(range(1, int(EPOCHS) + 1))
        values[f"final_top1/{row}"] = 100 * probe["linear_top1"]
        values[f"final_top5/{row}"] = 100 * probe["linear_top5"]
        values[f"epoch1_top1/{row}"] = 100 * epochs[1]["online_top1"]
        curve = result["curves"][row]
        assert curve["epoch"] == sorted(epochs)
        assert curve["top5"] == pytest.approx([100 * epochs[e]["online_top5"] for e in sorted(epochs)])
    values["lead_epoch1_top1/frossl"] = values["epoch1_top1/frossl"] - values["epoch1_top1/barlow_twins"]
    assert {k: c["value"] for k, c in result["cells"].items()} == pytest.approx(values)
    assert not any(c["comparable"] for c in result["cells"].values())
    assert result["cells"]["lead_epoch1_top1/frossl"]["reason"].count("differs from the paper setting") == 1

    rows = tiny.check_rows("check_figure4")
    assert_check_table_printed(run.stdout, rows)
    cells = by_cell(rows)
    for name in ("final_top1/frossl", "final_top5/frossl", "final_top1/barlow_twins", "final_top5/barlow_twins",
                 "lead_epoch1_top1/frossl"):
        row = cells[name]
        assert row["status"] == "NOT-COMPARABLE" and row["measured"] == pytest.approx(values[name])
        assert row["delta"] == pytest.approx(values[name] - row["paper"])
        assert "optim.epochs: 100 -> 3" in row["note"]
    claim = cells["frossl_leads_after_epoch1"]
    holds = values["epoch1_top1/frossl"] > values["epoch1_top1/barlow_twins"]
    assert claim["status"] == "NOT-COMPARABLE" and claim["measured"] == ("holds" if holds else "does not hold")

    tiny.make("report", f"OUT={tiny.out}")
    html = (tiny.results / "report.html").read_text()
    assert "Traceback" not in html
    section = html.split("Figure 4: ImageNet ResNet18")[-1].split("What is missing")[0]
    for name in ("final_top1/frossl", "final_top5/frossl", "final_top1/barlow_twins", "final_top5/barlow_twins"):
        assert f"<b>{values[name]:.1f}</b>" in section, name          # paper / measured pivot cell
    assert "After the first epoch FroSSL" in section and "data:image/png;base64" in section
    assert "NOT-COMPARABLE" in section


# slow (about 45 s on 2 cores); the default run keeps the ablation's plan (`make -n`, tests/test_targets.py),
# both FroSSL variants training (tests/test_methods.py) and the claims profile's ablation row
# (tests/test_claims.py's tiny end-to-end)
@pytest.mark.slow
def test_ablation_tiny_end_to_end(tiny):
    """`make ablation DATASETS=stl10` on STL-10 binaries: FroSSL without and with logs, pretrained,
    validated every epoch (Table 3's rows) and probed (Table 2's); the check of the two rows reads
    both tables."""
    run = tiny.target("ablation", "DATASETS=stl10")
    assert "ablation: the STL-10 runs also give Table 3's no-logs rows" in run.stdout
    table2, table3 = tiny.result("table2"), tiny.result("table3")
    expected = {}
    for row, logs in (("frossl_nologs", False), ("frossl", True)):
        run_dir = tiny.run_dir(f"stl10-{row}")
        config = saved_config(run_dir)
        assert config["loss"]["use_logs"] is logs and config["eval"]["online_eval_every"] == 1
        probe = json.loads((run_dir / "eval_full.json").read_text())
        expected[("table2", f"stl10/{row}")] = 100 * probe["linear_top1"]
        expected[("table3", f"epoch3/{row}")] = 100 * online(run_dir)[3]["online_top1"]
    for (experiment, cell), value in expected.items():
        measured = (table2 if experiment == "table2" else table3)["cells"][cell]
        assert measured["value"] == pytest.approx(value) and not measured["comparable"]
        assert "optim.epochs: 500 -> 3" in measured["reason"]

    rows = tiny.check_rows("check_ablation")
    assert_check_table_printed(run.stdout, rows)
    assert {(r["experiment"].split("[")[0], r["cell"]) for r in rows} == set(expected)  # its own rows only
    for r in rows:
        value = expected[(r["experiment"].split("[")[0], r["cell"])]
        assert r["status"] == "NOT-COMPARABLE" and r["measured"] == pytest.approx(value)


# slow (make test-slow): ~65 s; each part of `make all` runs in the default run (the figure3, figure4 and
# ablation tests here, table2/table3 and the check and report in tests/test_targets.py)
@pytest.mark.slow
def test_all_tiny_end_to_end(tiny):
    """`make all METHODS=frossl DATASETS="stl10 imagenet"`: every sub-target in turn, each ending with
    its own check, then the full check and the report. Runs the other tests trained are skipped.
    Figure 2 at its paper settings is ~45 s of CPU (not tiny): here its folder is first written by
    `python -m repro.linear_regime` with 256 images and t up to 400 (~3 s), which `all` finds done and
    collects as not the paper's setting (NOT-COMPARABLE, under Figure 2's own name: EPOCHS and
    OVERRIDES do not apply to it)."""
    subprocess.run([sys.executable, "-m", "repro.linear_regime", "--data", str(tiny.root / "cifar10"), "--out",
                    str(tiny.out / "figure2"), "--num-images", "256", "--t-max", "400", "--record-every", "5"],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, **tiny.env}, timeout=300)
    figure2 = json.loads((tiny.out / "figure2" / "figure2.json").read_text())

    run = tiny.target("all", "METHODS=frossl", "DATASETS=stl10 imagenet")
    text = run.stdout
    for sub in ("figure2", "table2", "table3", "figure3", "figure4"):
        assert re.search(rf"^# {sub}: out=", text, re.MULTILINE), sub
        assert (tiny.results / f"check_{sub}.json").exists(), sub         # each ended with its own check
    assert "figure2: done" in text and "the full check, then the report" in text
    assert "figure2: EPOCHS and OVERRIDES apply to training runs only" in text
    stl10 = tiny.run_dir("stl10-frossl")
    assert f"stl10/frossl seed 0 ({stl10.name}): trained (done), skipped" in text   # table3 reuses table2's run
    assert (tiny.run_dir("figure3-stl10-frossl") / "spectra.jsonl").exists()
    assert (tiny.run_dir("imagenet-frossl") / "eval_full.json").exists()

    table2 = tiny.result("table2")["cells"]["stl10/frossl"]
    figure4 = tiny.result("figure4")["cells"]["final_top1/frossl"]
    figure2_cells = json.loads((tiny.results / "figure2.json").read_text())["cells"]
    for variant in ("eq8", "barlow"):
        assert float(figure2_cells[f"saturation_t_top10/{variant}"]["value"]) == pytest.approx(
            figure2["summary"][variant]["saturation_t_top"])
    assert all(not c["comparable"] and "settings differ" in c["reason"] for c in figure2_cells.values())
    rows = tiny.check_rows("check")                               # the full check
    measured = {(r["experiment"].split("[")[0], r["cell"]): r for r in rows if r["measured"] is not None}
    assert measured[("table2", "stl10/frossl")]["measured"] == pytest.approx(table2["value"])
    assert measured[("figure4", "final_top1/frossl")]["measured"] == pytest.approx(figure4["value"])
    claim = next(r for r in rows if r["cell"] == "eq8_saturates_first")
    assert claim["experiment"] == "figure2" and claim["status"] == "NOT-COMPARABLE"
    assert any(r["status"] == "MISSING" for r in rows)           # the paper's rows without a run stay MISSING
    assert not any(r["status"] == "FAIL" for r in rows)

    html = (tiny.results / "report.html").read_text()            # rendered by `all` (repro.report)
    assert "FroSSL reproduction report" in html and "Traceback" not in html
    assert figure2["verdict"]["detail"] in html.replace("&#x27;", "'")
    assert f"<b>{table2['value']:.1f}</b>" in html and f"<b>{figure4['value']:.1f}</b>" in html
    assert html.count("data:image/png;base64") >= 3               # figures 2, 3, 4


def test_all_restricted_to_imagenet_skips_the_parts_without_it(tmp_path):
    """`make -n all DATASETS=imagenet` skips Tables 2 and 3 (no ImageNet column) and plans Figure 4's
    run, instead of stopping with "DATASETS imagenet not in this experiment"."""
    result = subprocess.run(["make", "--no-print-directory", "-n", "all", "SETUP=true", f"OUT={tmp_path}",
                             "DATASETS=imagenet", "METHODS=frossl"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# table2: nothing selected by METHODS/DATASETS/PROFILE, skipped" in result.stdout
    assert "# table3: nothing selected by METHODS/DATASETS/PROFILE, skipped" in result.stdout
    assert "-m repro.train repro/configs/imagenet/frossl.yaml name=imagenet-frossl-seed0" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("target", ["figure3", "figure4"])
def test_default_data_preparation_writes_ffcv_files_and_trains_on_them(target, tmp_path):
    """PREPARE_DATA=auto (the Makefile's default) with ffcv installed: the target converts the
    training split (STL-10 binaries / the JPEG folder) to a .beton, then trains through the FFCV
    loader. ~25 s per target (numba compiles the loader in each training process): slow."""
    pytest.importorskip("ffcv")
    data = Tiny(tmp_path)
    variables = [v for v in data.variables if not v.startswith("PREPARE_DATA=")] + ["PREPARE_DATA=auto",
                                                                                       "METHODS=frossl"]
    run = data.make(target, *variables)
    cache = tmp_path / "runs" / "cache" / "ffcv"   # CACHE_DIR's default: the data folders may be read-only
    dataset, beton = {"figure3": ("stl10", cache / "stl10_train+unlabeled.beton"),
                      "figure4": ("imagefolder", cache / "imagefolder_train.beton")}[target]
    assert f"# data: FFCV file for {'stl10' if target == 'figure3' else 'imagenet'}" in run.stdout
    assert beton.exists() and f"FFCV two-view loader for {dataset} train" in run.stderr
    rows = data.check_rows(f"check_{target}")
    assert rows and all(r["status"] in ("NOT-COMPARABLE", "NO-REFERENCE") for r in rows)
    assert all(r["measured"] is not None for r in rows)
