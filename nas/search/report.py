"""Results of a study: trial rows, the top-k table, CSV/JSON files and HTML plots."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.search.pareto import pareto_front
from nas.search.status import Status

__all__ = [
    "COLUMNS",
    "counts",
    "counts_line",
    "format_table",
    "pareto_figure",
    "ranked",
    "rows",
    "shared_plotly_js",
    "trial_row",
    "write_plots",
    "write_tables",
]

COLUMNS = ("number", "state", "status", "accuracy", "zero_cost", "mflops", "params_m", "latency_ms",
           "seconds", "pruned_at", "duplicate_of", "reason", "hash", "genotype")


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    ua = t.user_attrs
    value = t.values[0] if t.values else None
    if value is None and ua.get("accuracy") is not None:
        value = ua["accuracy"]
    return {
        "number": t.number, "state": t.state.name, "status": ua.get("status"),
        "accuracy": value, "zero_cost": ua.get("zero_cost"), "mflops": ua.get("mflops"),
        "params_m": ua.get("params_m"),
        "latency_ms": ua.get("latency_ms"), "seconds": ua.get("seconds"),
        "pruned_at": ua.get("pruned_at"), "duplicate_of": ua.get("duplicate_of"),
        "reason": ua.get("reason"), "hash": ua.get("hash"), "genotype": ua.get("genotype"),
    }


def rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]


def ranked(study: optuna.Study) -> list[dict[str, Any]]:
    """Trained trials (not duplicates), best accuracy first, cheaper first on ties."""
    done = [trial_row(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("status") == Status.TRAINED]
    return sorted(done, key=lambda r: (-r["accuracy"], r["mflops"], r["number"]))


def counts(study: optuna.Study) -> dict[str, int]:
    out = {"trained": 0, "pruned": 0, "rejected": 0, "duplicate": 0, "filtered": 0, "stopped": 0,
           "failed": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.FAIL:
            out["failed"] += 1
        else:
            status = t.user_attrs.get("status")
            if status in out:
                out[status] += 1
    return out


def write_tables(study: optuna.Study, run_dir: Path) -> tuple[Path, Path]:
    data = rows(study)
    csv_path, json_path = run_dir / "trials.csv", run_dir / "trials.json"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(data)
    payload = {"study": study.study_name, "identity": study.user_attrs.get("identity"),
               "reference": study.user_attrs.get("reference"), "trials": data}
    json_path.write_text(json.dumps(payload, indent=2))
    return csv_path, json_path


def counts_line(n: dict[str, int], prefilter: str | None = None) -> str:
    """One line of a study's `counts`: trained, pruned, rejected, duplicates, failed, ..."""
    return (f"{n['trained'] + n['pruned']} trained ({n['pruned']} pruned), {n['rejected']} rejected before "
            f"training, {n['duplicate']} duplicates, {n['failed']} failed"
            + (f", {n['filtered']} skipped by the {prefilter} pre-filter" if n["filtered"] else "")
            + (f", {n['stopped']} stopped when the study was full" if n["stopped"] else ""))


def format_table(best: list[dict[str, Any]], reference: dict[str, Any] | None,
                 top_k: int) -> str:
    latency = any(r.get("latency_ms") is not None for r in best)
    head = ("rank", "trial", "accuracy", "MFLOPs", "params M") + (("latency ms",) if latency else ())
    lines = [(*head, "genotype")]

    def cells(rank: str, number: str, r: dict[str, Any]) -> tuple[str, ...]:
        out = (rank, number, f"{r['accuracy']:.4f}", f"{r['mflops']:.1f}", f"{r['params_m']:.3f}")
        if latency:
            lat = r.get("latency_ms")
            out += ("-" if lat is None else f"{lat:.2f}",)
        return (*out, r["genotype"])

    for i, r in enumerate(best[:top_k], start=1):
        lines.append(cells(str(i), str(r["number"]), r))
    if reference and reference.get("accuracy") is not None:
        lines.append(cells("ref", "-", reference))
    n = len(head)
    widths = [max(len(row[i]) for row in lines) for i in range(n)]
    out = []
    for row in lines:
        parts = [row[i].rjust(widths[i]) if i else row[i].ljust(widths[i]) for i in range(n)]
        out.append("  ".join(parts) + "  " + row[n])
    return "\n".join(out)


def pareto_figure(study: optuna.Study, reference: dict[str, Any] | None = None, cost: str = "mflops"):
    """Accuracy against `cost` (MFLOPs by default) of every trained trial, with the Pareto front."""
    import plotly.graph_objects as go

    label = {"mflops": "MFLOPs (MACs)", "latency_ms": "latency (ms)", "params_m": "params (M)"}[cost]
    pts = [p for p in ranked(study) if p.get(cost) is not None]
    fig = go.Figure()
    if pts:
        fig.add_trace(go.Scatter(x=[p[cost] for p in pts], y=[p["accuracy"] for p in pts],
                                 mode="markers", name="trials",
                                 text=[f"trial {p['number']}" for p in pts]))
        front = pareto_front(pts, cost)
        fig.add_trace(go.Scatter(x=[p[cost] for p in front], y=[p["accuracy"] for p in front],
                                 mode="lines+markers", name="Pareto front", line={"shape": "hv"}))
    if reference and reference.get("accuracy") is not None and reference.get(cost) is not None:
        fig.add_trace(go.Scatter(x=[reference[cost]], y=[reference["accuracy"]],
                                 mode="markers", name="reference", marker={"symbol": "star",
                                                                           "size": 14}))
    fig.update_layout(title=f"{study.study_name}: accuracy vs {label}", xaxis_title=label,
                      yaxis_title="proxy accuracy")
    return fig


def write_plots(study: optuna.Study, run_dir: Path, reference: dict[str, Any] | None,
                cost: str = "mflops") -> list[Path]:
    """HTML plots in the run directory; plots that need more trials are skipped."""
    import optuna.visualization as vis

    written = []
    # A pareto study has two objectives: these plots follow accuracy.
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    name = "accuracy" if target else "Objective Value"
    makers = {"optimization_history": lambda: vis.plot_optimization_history(
                  study, target=target, target_name=name),
              "param_importances": lambda: vis.plot_param_importances(
                  study, target=target, target_name=name),
              "pareto_front": lambda: pareto_figure(study, reference, cost)}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need at least two finished trials
        path = run_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs=shared_plotly_js(run_dir))
        written.append(path)
    return written


def shared_plotly_js(run_dir: Path) -> str:
    """One copy of plotly.js (4.8 MB) for all run folders beside `run_dir`, not one each.

    Returns the script's address relative to `run_dir`, for the plots' HTML; the files
    still open offline, as long as the folders stay together.
    """
    import shutil

    import plotly

    target = run_dir.resolve().parent / "plotly.min.js"
    if not target.is_file():
        source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        tmp = target.with_name(f".plotly.min.js.{os.getpid()}")
        shutil.copyfile(source, tmp)
        tmp.replace(target)  # atomic: parallel workers may do this at once
    return "../plotly.min.js"
