"""Reading the outputs of gpu_check's commands (the bench's JSON, the run folder's metrics.jsonl and
the trainer's log) and writing the Markdown summary."""
from __future__ import annotations

import json
import math
from pathlib import Path

from repro.gpu_check.estimate import ANCHOR_EPOCH_S, ANCHOR_GPU, REFERENCE_GPU, REFERENCE_UTILISATION, format_duration


def parse_bench(report: dict) -> dict:
    """The figures of `python -m benchmarks.bench_step --out FILE` that the summary shows."""
    project, baseline = report["project"], report["baseline"]
    return {
        "device": report["settings"]["device"], "compile": report["settings"]["compile"],
        "batch": report["settings"]["batch"], "project_loader": report["settings"].get("project_loader"),
        "project_views_per_s": project["views_per_s"], "project_images_per_s": project["images_per_s"],
        "project_step_ms": 1000 * project["step_s"], "project_warmup_s": project["warmup_s"],
        "project_peak_memory_gib": project.get("peak_memory_gb"),
        "baseline_views_per_s": baseline["views_per_s"], "baseline_step_ms": 1000 * baseline["step_s"],
        "speedup": report["speedup"], "cifar10_epoch_s": report["cifar10_epoch_s_project"],
        "mfu": report.get("mfu_project"),
    }


def parse_train(metrics: Path, log: Path, batch: int) -> dict:
    """Per-epoch training seconds, images/s, online top-1 and the loader the trainer chose.

    A metrics line with `images_per_s` covers the steps since the previous line (the trainer
    restarts its window timer at every line and at each epoch start, so an epoch's lines add up to
    its training time without the validation pass). The rate is taken over epochs 2 and later when
    there are any: epoch 1 carries cudnn autotuning, compilation and the loaders' first start."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    windows = sorted((r for r in records if "images_per_s" in r), key=lambda r: r["step"])
    if not windows:
        raise ValueError(f"{metrics} has no training lines (images_per_s)")
    epochs: dict[int, dict] = {}
    previous = 0
    for r in windows:
        steps = r["step"] - previous
        previous = r["step"]
        entry = epochs.setdefault(math.ceil(r["epoch"] - 1e-9), {"seconds": 0.0, "steps": 0})
        entry["seconds"] += steps * batch / r["images_per_s"]
        entry["steps"] += steps
    timed = [e for e in epochs if e >= 2] or list(epochs)
    seconds = sum(epochs[e]["seconds"] for e in timed)
    steps = sum(epochs[e]["steps"] for e in timed)
    online = {int(r["epoch"]): r["online_top1"] for r in records if "online_top1" in r}
    peaks = [r.get("peak_memory_gib", r.get("peak_memory_gb")) for r in records]
    peaks = [p for p in peaks if p is not None]
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return {
        "epoch_train_s": {str(e): round(v["seconds"], 2) for e, v in sorted(epochs.items())},
        "timed_epochs": timed, "s_per_epoch": seconds / len(timed), "images_per_s": steps * batch / seconds,
        "steps_per_epoch": epochs[timed[0]]["steps"], "online_top1": online,
        "final_online_top1": online[max(online)] if online else None,
        "peak_memory_gib_trainer": max(peaks) if peaks else None,
        "loader_line": next((ln for ln in lines if ln.startswith("data: ") and "two-view loader" in ln), None),
    }


def _fmt(value, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def render_markdown(summary: dict) -> str:
    parts = summary["parts"]
    env = parts["environment"]["details"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in env.get("gpus", [])) \
        or "none"
    given = summary["data"].get("given")
    data = f"{given} ({summary['data'].get('kind', '-')})" if given else \
        "none given (the bench reads synthetic batches)"
    lines = [
        "# gpu-check summary", "",
        *([] if summary.get("finished") else ["**Unfinished**: the run was cut off or is still running; the parts "
                                              "below are as far as it got.", ""]),
        f"- date: {summary['date']}; mode: {summary['mode']}; wall time {format_duration(summary['wall_s'])}",
        f"- command: `{summary['command']}`",
        f"- GPUs: {gpus}; driver {env.get('driver') or '-'}; torch {env.get('torch', '-')} "
        f"(CUDA {env.get('torch_cuda_build') or '-'}, cuDNN {env.get('cudnn') or '-'}); "
        f"torchvision {env.get('torchvision', '-')}; numpy {env.get('numpy', '-')}; "
        f"Python {env.get('python', '-')} ({'virtualenv' if env.get('virtualenv') else 'system/site Python'})",
        f"- data: {data}; "
        f"loader: **{summary['loader']}** ({summary['loader_note']})",
        f"- result: **{'FAILED: ' + ', '.join(summary['failed']) if summary['failed'] else 'no part failed'}**",
        "", "| part | status | time | note |", "|---|---|---|---|",
    ]
    for name, p in parts.items():
        note = p["reason"] or p["details"].get("summary", "")
        lines.append(f"| {name} | {p['status'].upper()} | {_fmt(p['seconds'], '.0f', ' s')} | "
                     f"{str(note).replace('|', '/')} |")
    optional = env.get("optional_packages", {})
    if optional:
        lines += ["", "Optional packages: " + ", ".join(f"{k} {v or 'absent'}" for k, v in optional.items())]
    skipped_tests = parts["cuda_tests"]["details"].get("skipped")
    if skipped_tests:
        lines += ["", "CUDA tests skipped:", *[f"- {s}" for s in skipped_tests]]
    bench_rows = [(n, parts[n]["details"]) for n in ("bench_eager", "bench_compile") if parts[n]["status"] == "passed"]
    if bench_rows:
        lines += ["", "## make bench", "", "| run | project views/s | baseline views/s | ratio | peak memory | MFU | "
                  "CIFAR-10 epoch |", "|---|---|---|---|---|---|---|"]
        for name, d in bench_rows:
            mfu = _fmt(100 * d["mfu"], ".1f", "%") if d.get("mfu") else "-"
            lines.append(f"| {name} | {d['project_views_per_s']:.0f} | {d['baseline_views_per_s']:.0f} | "
                         f"{d['speedup']:.2f}x | {_fmt(d['project_peak_memory_gib'], '.2f', ' GiB')} | {mfu} | "
                         f"{d['cifar10_epoch_s']:.1f} s |")
    t = parts["train"]["details"]
    if "s_per_epoch" in t:
        peak = t.get("peak_memory_gib_trainer") or t.get("peak_gpu_memory_smi_gib")
        top1 = ", ".join(f"epoch {e}: {v:.3f}" for e, v in sorted(t["online_top1"].items(), key=lambda kv: int(kv[0])))
        lines += ["", "## FroSSL training run", "",
                  f"- {t['loader_line'] or 'loader line not found in the log'}",
                  f"- {t['s_per_epoch']:.1f} s per epoch of {t['steps_per_epoch']} steps (training only, "
                  f"epochs {t['timed_epochs']}), {t['images_per_s']:.0f} images/s; per epoch: {t['epoch_train_s']}",
                  f"- peak GPU memory: {_fmt(peak, '.2f', ' GiB')}"
                  f"{' (nvidia-smi, whole device)' if peak and not t.get('peak_memory_gib_trainer') else ''}",
                  f"- online top-1: {top1 or '-'}"]
    e = parts["estimate"]
    d = e["details"]
    if "flop_based" in d:
        measured = d.get("targets")
        head = ["", "## Estimated wall time of each target on one GPU", ""]
        if measured:
            head.append(f"Measured here: {d['images_per_s']:.0f} images/s ({d['rate_source']}), a CIFAR-10 epoch in "
                        f"{d['cifar10_epoch_s']:.1f} s; other runs are scaled by their FLOPs "
                        f"(repro/gpu_check/estimate.py). " + (e["reason"] or "Compute-scaled: runs bound by JPEG "
                                                              "decoding (ImageNet) take longer."))
        else:
            head.append(f"No rate measured here ({e['reason']}).")
        head += ["", f"Beside it, the two estimates made before any measurement: FLOP-based (one {REFERENCE_GPU} at "
                 f"{REFERENCE_UTILISATION:.0%} of its dense bf16 peak) and anchor-based (the published "
                 f"{ANCHOR_EPOCH_S} s SimCLR ResNet18 CIFAR-10 epoch on one {ANCHOR_GPU}, fp32).", "",
                 "| target | runs | pretraining | linear probes | total, measured here | FLOP-based | anchor-based |",
                 "|---|---|---|---|---|---|---|"]
        lines += head
        for target, flop in d["flop_based"].items():
            m = (measured or {}).get(target)
            here = [format_duration(m["pretrain_s"]), format_duration(m["probe_s"]),
                    f"**{format_duration(m['seconds'])}**"] if m else ["-", "-", "-"]
            lines.append(f"| {target} | {'; '.join(flop['runs']) or 'CPU only'} | {' | '.join(here)} | "
                         f"{format_duration(flop['seconds'])} | {format_duration(d['anchor_based'][target]['seconds'])} |")
    lines += ["", f"Logs of every command: {summary.get('logs', 'logs/')}. Send this file and gpu_check.json "
              f"(same folder) as the README's \"First hour on a GPU\" says.", ""]
    return "\n".join(lines)
