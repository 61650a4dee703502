"""What a finished study shows: its Pareto front, the model each rule picks, and a plot.

The report reads only the study (trial values and user attributes), so it works on any
machine that reaches the database, while workers are still running.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redaudit.nas.finalize import study_config
from redaudit.nas.select import Candidate, candidates_of, pareto_front, select
from redaudit.nas.search import SearchConfig


@dataclass(frozen=True)
class StudyReport:
    study_name: str
    config: SearchConfig
    candidates: list[Candidate]
    front: list[Candidate]
    chosen: dict[str, Candidate]  # rule -> candidate
    tolerance: float
    states: dict[str, int]  # trial state name -> count


def build_report(study: Any, tolerance: float = 0.01) -> StudyReport:
    candidates = candidates_of(study)
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    chosen = {rule: select(candidates, rule, tolerance) for rule in ("accuracy", "redundancy-aware")} \
        if candidates else {}
    return StudyReport(study_name=study.study_name, config=study_config(study), candidates=candidates,
                       front=pareto_front(candidates), chosen=chosen, tolerance=tolerance, states=states)


def plot_accuracy_vs_msrs(report: StudyReport, path: str | Path) -> Path:
    """Scatter of validation accuracy against MSRS, Pareto front joined, choices marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas: no pyplot, so the caller's matplotlib backend is untouched.
    figure = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    sizes = [12 + 60 * (c.parameters / max(1, max(o.parameters for o in report.candidates)))
             for c in report.candidates]
    axes.scatter([c.msrs for c in report.candidates], [100 * c.val_accuracy for c in report.candidates],
                 s=sizes, alpha=0.45, color="tab:blue", label="trials (size = parameters)")
    if report.front:
        axes.plot([c.msrs for c in report.front], [100 * c.val_accuracy for c in report.front],
                  "-o", color="tab:orange", markersize=4, label="Pareto front")
    markers = {"accuracy": ("s", "tab:red", "best accuracy"),
               "redundancy-aware": ("*", "tab:green", f"lowest MSRS within {100 * report.tolerance:g} pt")}
    for rule, choice in report.chosen.items():
        marker, colour, label = markers[rule]
        axes.scatter([choice.msrs], [100 * choice.val_accuracy], marker=marker, s=160, color=colour,
                     edgecolor="black", zorder=5, label=f"{label} (#{choice.number})")
    axes.set_xlabel("MSRS (lower = less redundant)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"{report.study_name}: {report.config.objective} search, {len(report.candidates)} trials")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    import io

    from redaudit.atomic import write_bytes

    buffer = io.BytesIO()  # rendered whole first: a failed write leaves no 0-byte PNG behind
    figure.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())
