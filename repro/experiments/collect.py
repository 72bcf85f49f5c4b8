"""Collectors: the cells of one result file, read from the run folders (no training). Each takes
the experiment record and the options and returns {"cells", "missing_rows", ...}; a cell is
{"value", "comparable", "reason", "n", "std", "runs"[, "per_seed"]}: the mean over the seeds on disk.
The records in table.py name their collector."""
from __future__ import annotations

import json
import math
from dataclasses import replace

from repro.cli import UserError
from repro.experiments.experiment import Experiment
from repro.experiments.options import Options
from repro.experiments.plan import RunSpec, missing_reason, registered_methods, run_spec
from repro.experiments.state import finished, online_by_epoch, planned_epochs, probe_kind, seeds_on_disk
from repro.experiments.variants import paper_row, rows_for


def comparable(spec: RunSpec, opts: Options) -> tuple[bool, str]:
    """A run is comparable when its saved config equals the reference setting (the paper's, or the
    claims profile's) in every semantic key (repro.config.NON_SEMANTIC), the samples
    each loss saw (train.loss_batch, set by the number of processes: plan.per_process_loss_batch) included."""
    from repro.config import load_config, loss_samples, semantic_diff
    try:
        saved = load_config(spec.run_dir(opts) / "config.yaml")
        # the run's own name and seed: a reference for this very run, not a difference to report
        reference = load_config(spec.config, [f"name={spec.name}", f"seed={spec.seed}", *spec.reference])
    except UserError as err:  # e.g. a config or method renamed since the run
        return False, f"config cannot be compared ({err})"
    changes = semantic_diff(reference, saved)
    split_only = all(c.startswith("train.loss_batch") for c in changes)   # not a changed batch, say
    if saved.train.loss_batch != reference.train.loss_batch and split_only:
        paper, run = loss_samples(reference), loss_samples(saved)
        return False, (f"each loss saw {run} samples, the {opts.profile} setting {paper} (train.loss_batch "
                       f"{reference.train.loss_batch} -> {saved.train.loss_batch}: data.batch_size "
                       f"{saved.data.batch_size} split over {saved.data.batch_size // run} processes)")
    if changes:
        changes.sort(key=lambda c: (not c.startswith("optim.epochs"), c.startswith("train.loss_batch")))  # the most common first
        keys = ", ".join(c.split(":")[0] for c in changes[1:])
        return False, f"differs from the {opts.profile} setting: {changes[0]}" + (f"; also {keys}" if keys else "")
    return True, ""


def aggregate(values: list[tuple[float, bool, str, str]]) -> dict:
    """Cell from per-seed (value, comparable, reason, run) tuples: the mean over seeds."""
    numbers = [v for v, _, _, _ in values]
    finite = [v for v in numbers if math.isfinite(v)]
    mean = (sum(finite) / len(finite) if len(finite) == len(numbers) else math.inf) if numbers else None
    std = None
    if len(finite) > 1:
        std = (sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5
    reasons = sorted({r for _, ok, r, _ in values if not ok})
    return {"value": "inf" if mean is not None and math.isinf(mean) else mean,
            "comparable": all(ok for _, ok, _, _ in values), "reason": "; ".join(reasons),
            "n": len(values), "std": std, "runs": [run for _, _, _, run in values],
            "per_seed": numbers}


def combined(parts: list[dict], value: float) -> dict:
    """A derived cell (an average, a difference) of other cells: comparable when all of them are."""
    return {"value": value, "comparable": all(p["comparable"] for p in parts),
            "reason": "; ".join(dict.fromkeys(p["reason"] for p in parts if p["reason"])),
            "n": min(p["n"] for p in parts), "std": None, "runs": [r for p in parts for r in p["runs"]]}


def runs_on_disk(exp: Experiment, opts: Options, row: str, dataset: str,
                 missing: dict[str, str], methods: set[str]) -> list[RunSpec]:
    """The runs of (row, dataset) for every seed found under OUT; notes the row in `missing` when
    its config or method is not written."""
    first = run_spec(exp, opts, row, dataset, opts.seeds[0])
    reason = missing_reason(first, methods)
    if reason:
        missing[row] = reason
    return [run_spec(exp, replace(opts, seeds=(seed,)), row, dataset, seed) for seed in seeds_on_disk(opts, first)]


def collect_probe_top1(exp: Experiment, opts: Options) -> dict:
    """Table 2: linear-probe top-1 x 100 of each finished run, dataset/row; the paper's "Average"
    column when a row has every dataset. A cached-probe result counts, as NOT-COMPARABLE."""
    per_cell: dict[str, list] = {}
    missing: dict[str, str] = {}
    methods = registered_methods()
    rows = rows_for(exp, opts.config_variant)   # VARIANT=authors: frossl_authors's runs fill frossl's cells
    for dataset in exp.datasets:
        for row in rows:
            for spec in runs_on_disk(exp, opts, row, dataset, missing, methods):
                if not finished(spec, opts):
                    continue
                run_dir, epochs = spec.run_dir(opts), planned_epochs(spec, opts)
                for probe in ("full", "cached"):   # the paper's probe first
                    path = run_dir / f"eval_{probe}.json"
                    result = json.loads(path.read_text()) if path.exists() else {}
                    if result.get("checkpoint_epoch") == epochs:
                        break
                else:
                    continue
                ok, reason = comparable(spec, opts)
                if probe != "full":
                    ok, reason = False, "; ".join(x for x in (reason, "cached probe, not the paper's") if x)
                per_cell.setdefault(f"{dataset}/{paper_row(row)}", []).append(
                    (100 * result["linear_top1"], ok, reason, str(run_dir)))
    cells = {cell: aggregate(values) for cell, values in per_cell.items()}
    for row in exp.rows:
        parts = [cells.get(f"{d}/{row}") for d in exp.datasets]
        if all(p is not None and isinstance(p["value"], float) for p in parts):
            average = combined(parts, sum(p["value"] for p in parts) / len(parts))
            average["reason"] = "; ".join(sorted({p["reason"] for p in parts if p["reason"]}))
            cells[f"average/{row}"] = average
    variant_rows = {paper_row(r): r for r in rows if paper_row(r) != r}
    return {"cells": cells, "missing_rows": missing, **({"row_variants": variant_rows} if variant_rows else {})}


def collect_online_top1(exp: Experiment, opts: Options, *, epochs: tuple[int, ...]) -> dict:
    """Table 3: online top-1 x 100 at the given epochs (finished or stopped runs alike), epoch<E>/row."""
    per_cell: dict[str, list] = {}
    missing: dict[str, str] = {}
    methods = registered_methods()
    for dataset in exp.datasets:
        for row in exp.rows:
            for spec in runs_on_disk(exp, opts, row, dataset, missing, methods):
                run_dir = spec.run_dir(opts)
                ok, reason = comparable(spec, opts)
                online = online_by_epoch(run_dir)
                for epoch in epochs:
                    if epoch in online:
                        per_cell.setdefault(f"epoch{epoch}/{row}", []).append(
                            (100 * online[epoch]["online_top1"], ok, reason, str(run_dir)))
    return {"cells": {cell: aggregate(values) for cell, values in per_cell.items()}, "missing_rows": missing}


def collect_spectra(exp: Experiment, opts: Options) -> dict:
    """Figure 3: condition number, entropy and saturation step of each finished run's spectra, and
    the eigenvalue curves of the first seed."""
    from repro.spectra import read_spectra, summarize
    cells, curves, missing = {}, {}, {}
    methods = registered_methods()
    for dataset in exp.datasets:
        for row in exp.rows:
            per_metric: dict[str, list] = {}
            for spec in runs_on_disk(exp, opts, row, dataset, missing, methods):
                if not finished(spec, opts):
                    continue
                records = read_spectra(spec.run_dir(opts))
                summary = summarize(records)
                if summary is None:
                    continue
                ok, why = comparable(spec, opts)
                for metric in ("condition_number", "entropy", "saturation_step"):
                    value = math.inf if summary[metric] is None else float(summary[metric])
                    per_metric.setdefault(metric, []).append((value, ok, why, str(spec.run_dir(opts))))
                curves.setdefault(row, {"step": [r["step"] for r in records],
                                        "eigenvalues": [r["eigenvalues"] for r in records],
                                        "saturation_step": summary["saturation_step"]})
            for metric, values in per_metric.items():
                cells[f"{metric}/{row}"] = aggregate(values)
    return {"cells": cells, "missing_rows": missing, "curves": curves}


def collect_online_curves_and_probe(exp: Experiment, opts: Options, *, window: int) -> dict:
    """Figure 4: per-epoch online top-1/top-5 curves (first `window` epochs), epoch-1 online top-1,
    the final probe's top-1/top-5; and the epoch-1 lead of the first row over the second."""
    cells, curves, missing = {}, {}, {}
    methods = registered_methods()
    for dataset in exp.datasets:
        for row in exp.rows:
            finals: dict[str, list] = {}
            for spec in runs_on_disk(exp, opts, row, dataset, missing, methods):
                run_dir = spec.run_dir(opts)
                ok, why = comparable(spec, opts)
                online = online_by_epoch(run_dir)
                if 1 in online:
                    finals.setdefault("epoch1_top1", []).append((100 * online[1]["online_top1"], ok, why,
                                                                 str(run_dir)))
                shown = [e for e in sorted(online) if e <= window]
                curves.setdefault(row, {"epoch": shown, "top1": [100 * online[e]["online_top1"] for e in shown],
                                        "top5": [100 * online[e].get("online_top5", math.nan) for e in shown]})
                path = run_dir / f"eval_{probe_kind(spec, opts)}.json"
                if finished(spec, opts) and path.exists():
                    result = json.loads(path.read_text())
                    full = result.get("probe") == "full"
                    why_probe = why if full else "; ".join(x for x in (why, "cached probe") if x)
                    for column in ("top1", "top5"):
                        finals.setdefault(f"final_{column}", []).append(
                            (100 * result[f"linear_{column}"], ok and full, why_probe, str(run_dir)))
            for column, values in finals.items():
                cells[f"{column}/{row}"] = aggregate(values)
    first, second = (cells.get(f"epoch1_top1/{row}") for row in exp.rows[:2])
    if first and second and isinstance(first["value"], float) and isinstance(second["value"], float):
        cells[f"lead_epoch1_top1/{exp.rows[0]}"] = combined([first, second], first["value"] - second["value"])
    return {"cells": cells, "missing_rows": missing, "curves": curves}


def collect_linear_regime(exp: Experiment, opts: Options) -> dict:
    """Figure 2: the top-10 saturation time of eq. 8 and of the Barlow variant, from the script's
    JSON; comparable when it ran with repro.linear_regime's default settings."""
    from repro.linear_regime import Settings
    path = opts.out / exp.done_file
    if not path.exists():
        return {"cells": {}, "missing_rows": {}}
    result = json.loads(path.read_text())
    ok = result["settings"] == Settings().__dict__
    reason = "" if ok else "settings differ from repro.linear_regime's defaults"
    cells = {}
    for variant in ("eq8", "barlow"):
        t = result["summary"][variant]["saturation_t_top"]
        cells[f"saturation_t_top10/{variant}"] = {"value": "inf" if t is None or t == math.inf else t,
                                                  "comparable": ok, "reason": reason, "n": 1, "std": None,
                                                  "runs": [str(path)]}
    return {"cells": cells, "missing_rows": {}, "verdict": result["verdict"], "seconds": result["seconds"]}


def collect_claims(exp: Experiment, opts: Options) -> dict:
    """The claims profile (docs/claims.md), x 100 for accuracies: online top-1 at each validated epoch
    (online_top1_epoch<E>/row), cached-probe and k-NN top-1 of the finished runs (probe_top1/row,
    knn_top1/row), the same two for the encoders at initialisation (row `random_init`, from the
    first row's runs), and the spectra's entropy after epoch 1 and at the end, condition number,
    saturation and settling step (entropy_epoch1/row, ...); with per-row learning rates (claims-all)
    each row's runs at its rate, listed under `learning_rates`. A run on disk that did not finish (its loss went
    non-finite: the trainer stops with "loss became non-finite", or it was interrupted) is listed under
    `unfinished`, never dropped silently; its online accuracies before the stop are kept."""
    from repro.spectra import read_spectra, spectral_entropy, summarize
    per_cell: dict[str, list] = {}
    missing: dict[str, str] = {}
    unfinished: dict[str, list[str]] = {}
    methods = registered_methods()

    def add(cell: str, value: float, ok: bool, why: str, run: str) -> None:
        per_cell.setdefault(cell, []).append((value, ok, why, run))

    for dataset in exp.datasets:
        for row in exp.rows:
            for spec in runs_on_disk(exp, opts, row, dataset, missing, methods):
                run_dir = spec.run_dir(opts)
                ok, why = comparable(spec, opts)
                for epoch, record in sorted(online_by_epoch(run_dir).items()):
                    add(f"online_top1_epoch{epoch}/{row}", 100 * record["online_top1"], ok, why, str(run_dir))
                if not finished(spec, opts):
                    unfinished.setdefault(row, []).append(run_dir.name)
                    continue
                epochs = planned_epochs(spec, opts)
                evals = [("", row)] + ([("_random_init", "random_init")] if row == exp.rows[0] else [])
                for tail, label in evals:
                    path = run_dir / f"eval_cached{tail}.json"
                    result = json.loads(path.read_text()) if path.exists() else {}
                    if result.get("checkpoint_epoch") == (0 if tail else epochs):
                        add(f"probe_top1/{label}", 100 * result["linear_top1"], ok, why, str(run_dir))
                        add(f"knn_top1/{label}", 100 * result["knn_top1"], ok, why, str(run_dir))
                records = read_spectra(run_dir)
                summary = summarize(records)
                if summary is None:
                    continue
                # records carry a fractional epoch (step / steps per epoch): the last one at or before epoch 1
                first_epoch = [r for r in records if r.get("epoch") is not None and r["epoch"] <= 1.0
                               and len(r["eigenvalues"]) >= summary["k"]]
                if first_epoch:
                    add(f"entropy_epoch1/{row}", spectral_entropy(first_epoch[-1]["eigenvalues"], summary["k"]),
                        ok, why, str(run_dir))
                add(f"entropy/{row}", summary["entropy"], ok, why, str(run_dir))
                add(f"condition_number/{row}", summary["condition_number"], ok, why, str(run_dir))
                for metric in ("saturation_step", "settling_step"):   # settling: repro/spectra.py settling_index
                    step = summary[metric]
                    add(f"{metric}/{row}", math.inf if step is None else float(step), ok, why, str(run_dir))
    cells = {cell: aggregate(values) for cell, values in per_cell.items()}
    return {"cells": cells, "missing_rows": missing, "unfinished": unfinished, "seeds": list(opts.seeds),
            **({"learning_rates": dict(opts.row_lr)} if opts.row_lr else {})}
