"""``redaudit nas``: redundancy-aware architecture search (run, report, export).

Thin layer: parse options, call :mod:`redaudit.nas`, render with rich, map RedauditError to a
one-line ``error:`` message and exit code 2. Ctrl-C during ``run`` exits 130 and leaves the
study consistent (the interrupted trial is recorded as FAILED).
"""
from __future__ import annotations

import sys
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from redaudit.cli.common import console as stdout
from redaudit.cli.progress import LineReporter
from redaudit.core.progress import ScanProgress
from redaudit.cli.common import err_console as stderr
from redaudit.cli.common import user_errors as _user_errors
from redaudit.cli import signals
from redaudit.cli.signals import pause_at
from redaudit.nas.space import MAX_EPOCHS
from redaudit.cli.params import DatabaseUrl, InputPath, Number, OutputPath, count, number


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _candidate_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (("choice", "left"), ("trial", "right"), ("architecture", "left"),
                            ("val acc %", "right"), ("test acc %", "right"), ("MSRS", "right"),
                            ("params", "right"), ("MFLOPs", "right"), ("latency ms", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    from redaudit.nas.space import Architecture

    for label, c in rows:
        table.add_row(label, str(c.number), Architecture.from_dict(c.architecture).describe(),
                      _percent(c.val_accuracy), _percent(c.test_accuracy), f"{c.msrs:.3f}",
                      f"{c.parameters:,}", f"{c.flops / 1e6:.2f}", f"{c.latency_ms:.3f}")
    return table


@click.group("nas")
def nas() -> None:
    """Redundancy-aware neural architecture search (needs: pip install 'redaudit[nas]')."""
    _quiet_optuna()


def _quiet_optuna() -> None:
    """The application's choice (the library leaves global state alone): Optuna logs warnings
    only, and its ExperimentalWarning for heartbeats and metric names, which redaudit uses
    knowingly, is not shown to CLI users."""
    import warnings

    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # An interrupted trial is said in one line by `nas run`; Optuna's own "Trial N failed ...
    # KeyboardInterrupt" warning with its traceback would bury it.
    for handler in optuna.logging.get_logger("optuna").handlers:  # records of child loggers reach these
        handler.addFilter(_not_an_interrupt)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _not_an_interrupt(record: Any) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, KeyboardInterrupt) and "KeyboardInterrupt" not in record.getMessage()


@nas.command("run")
@click.option("--study", "study_name", default=None, help="Study name (default: nas-OBJECTIVE). "
              "Several processes with the same name and --db share one study.")
@click.option("--trials", type=count(1, 1_000_000), default=20, show_default=True,
              help="Trials this process runs.")
@click.option("--objective", type=click.Choice(["redundancy-aware", "accuracy"]), default="redundancy-aware",
              show_default=True, help="redundancy-aware: maximise accuracy and minimise MSRS; accuracy: standard NAS.")
@click.option("--budget", type=count(1, MAX_EPOCHS), default=12, show_default=True,
              help=f"Training epochs per candidate (the paper scores after 12 of 200; at most {MAX_EPOCHS}).")
@click.option("--seed", type=Number(int, 0, 2**32 - 1), default=0, show_default=True, help="Sampler and training seed.")
@click.option("--sampler", type=click.Choice(["tpe", "nsga2", "random"]), default="tpe", show_default=True)
@click.option("--space", "space_file", type=InputPath(), default=None,
              help="TOML file declaring the search space (default: built-in).")
@click.option("--data", "data_file", type=InputPath(), default=None,
              help=".npz with arrays x (N, ...) and y (N,) (default: scikit-learn digits).")
@click.option("--db", "db_url", type=DatabaseUrl(), default=None, help="Database URL (default: $REDAUDIT_DB or the history DB).")
@click.option("--artifacts", "artifact_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the trials' ONNX files (share it between machines).")
@click.option("--worker-id", type=count(0, 1_000_000), default=0, show_default=True,
              help="Give each parallel worker its own id so their samplers draw different candidates.")
@click.option("--retrain", "retrain_epochs", type=count(1, MAX_EPOCHS), default=None,
              help="After the search, retrain the chosen model for this many epochs.")
@click.option("--tolerance", type=number(0.0, 100.0), default=1.0, show_default=True,
              help="Accuracy points below the best that the redundancy-aware choice may give up.")
@click.option("-o", "--output", type=OutputPath(), default=None,
              help="Write the chosen (retrained, if asked) model here as ONNX.")
@_user_errors
def run_command(study_name: str | None, trials: int, objective: str, budget: int, seed: int, sampler: str,
                space_file: str | None, data_file: str | None, db_url: str | None, artifact_dir: str | None,
                worker_id: int, retrain_epochs: int | None, tolerance: float, output: str | None) -> None:
    """Run TRIALS more trials of a study, then show the model each selection rule picks."""
    from redaudit.nas.data import load_dataset
    from redaudit.nas.search import SearchConfig, run_search
    from redaudit.nas.space import Architecture, load_space
    from redaudit.nas.train import require_torch

    require_torch()
    config = SearchConfig(objective=objective, budget=budget, seed=seed, sampler=sampler,
                          space=load_space(space_file))
    name = study_name or f"nas-{objective}"
    data = load_dataset(data_file, seed=config.split_seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        tasks: dict[int, Any] = {}

        lines = None if stderr.is_terminal else LineReporter("nas", stderr)  # CI logs: timestamped lines

        def on_progress(number: int, stage: str, done: int, total: int) -> None:
            pause_at("work")
            if lines is not None:
                step = "training (epochs)" if stage == "train" else "exporting and scanning"
                lines(ScanProgress(f"trial {number}/{step}", done, total))
                return
            if number not in tasks:
                tasks[number] = bar.add_task(f"trial {number}", total=budget + 1)
            label = "training" if stage == "train" else "exporting + scanning"
            completed = done if stage == "train" else budget + done
            bar.update(tasks[number], description=f"trial {number}: {label}", completed=completed)

        def on_trial(frozen: Any) -> None:
            if frozen.number in tasks:
                bar.remove_task(tasks.pop(frozen.number))
            attrs = frozen.user_attrs
            if "val_accuracy" not in attrs:
                bar.console.print(f"trial {frozen.number}: {frozen.state.name}")
                return
            arch = Architecture.from_dict(attrs["architecture"]).describe()
            reused = f"  (same as trial {attrs['duplicate_of']})" if "duplicate_of" in attrs else ""
            bar.console.print(f"trial {frozen.number:>3}  {arch:<24} val {_percent(attrs['val_accuracy'])}%  "
                              f"MSRS {attrs['msrs']:.3f}  params {attrs['parameters']:,}{reused}")

        try:
            with signals.as_keyboard_interrupt():  # Optuna marks the running trial FAILED only for this
                summary = run_search(name, trials, config, data=data, db_url=db_url, artifact_dir=artifact_dir,
                                     worker_id=worker_id, progress=on_progress, on_trial=on_trial)
        except KeyboardInterrupt as interrupt:
            signum = getattr(interrupt, "signum", signals.signal.SIGINT)
            word = "terminated" if signum == signals.signal.SIGTERM else "interrupted"
            click.echo(f"{word}: study {name!r} is consistent (the running trial is marked FAILED); "
                       "run the same command again to continue", err=True)
            sys.exit(signals.exit_code(signum))
    stdout.print(f"study {summary.study_name!r}: ran {summary.trials_run} trials; "
                 f"{summary.complete} complete, {summary.failed} failed in total")
    _show_choices(name, db_url, tolerance / 100.0, retrain_epochs, output, data_file, artifact_dir)


def _show_choices(name: str, db_url: str | None, tolerance: float, retrain_epochs: int | None,
                  output: str | None, data_file: str | None, artifact_dir: str | None) -> None:
    from redaudit.nas.finalize import export_trial, retrain_trial
    from redaudit.nas.report import build_report
    from redaudit.nas.storage import load_existing_study, open_storage

    study = load_existing_study(name, open_storage(db_url))
    report = build_report(study, tolerance)
    if not report.chosen:
        return
    rule = report.config.objective
    stdout.print(_candidate_table("chosen models", [(r, c) for r, c in report.chosen.items()]))
    chosen = report.chosen[rule]
    if retrain_epochs:
        record = retrain_trial(study, chosen.number, retrain_epochs, data_path=data_file, output=output)
        stdout.print(f"retrained trial {chosen.number} for {retrain_epochs} epochs: val "
                     f"{_percent(record.val_accuracy)}%, test {_percent(record.test_accuracy)}%, "
                     f"MSRS {record.msrs:.3f}, params {record.parameters:,}")
    elif output:
        outcome = export_trial(study, chosen.number, output, artifact_dir=artifact_dir, data_path=data_file)
        stdout.print(f"wrote trial {chosen.number} ({outcome.source}) to {outcome.path}")
    if output and retrain_epochs:
        stdout.print(f"wrote the retrained model to {output}")


@nas.command("report")
@click.argument("study_name", metavar="STUDY")
@click.option("--db", "db_url", type=DatabaseUrl(), default=None, help="Database URL (default: $REDAUDIT_DB or the history DB).")
@click.option("--tolerance", type=number(0.0, 100.0), default=1.0, show_default=True,
              help="Accuracy points below the best that the redundancy-aware choice may give up.")
@click.option("--plot", "plot_path", type=OutputPath(), default=None,
              help="PNG of accuracy vs MSRS (default: STUDY-accuracy-vs-msrs.png).")
@click.option("--no-plot", is_flag=True, help="Do not write the PNG.")
@_user_errors
def report_command(study_name: str, db_url: str | None, tolerance: float, plot_path: str | None,
                   no_plot: bool) -> None:
    """Pareto front (accuracy vs MSRS), the model each rule picks, and a plot."""
    from redaudit.nas.report import build_report, plot_accuracy_vs_msrs
    from redaudit.nas.storage import load_existing_study, open_storage

    study = load_existing_study(study_name, open_storage(db_url))
    report = build_report(study, tolerance / 100.0)
    states = ", ".join(f"{count} {state.lower()}" for state, count in sorted(report.states.items()))
    config = report.config
    stdout.print(f"study {study_name!r}: objective {config.objective}, sampler {config.sampler}, "
                 f"budget {config.budget} epochs, seed {config.seed}; trials: {states or 'none'}")
    if not report.candidates:
        stdout.print("no completed trials yet")
        return
    stdout.print(_candidate_table("Pareto front (max validation accuracy, min MSRS)",
                                  [("", c) for c in report.front]))
    stdout.print(_candidate_table(f"chosen models (tolerance {tolerance:g} pt)",
                                  list(report.chosen.items())))
    if not no_plot:
        path = plot_accuracy_vs_msrs(report, plot_path or f"{study_name}-accuracy-vs-msrs.png")
        stdout.print(f"plot: {path}")


def _default_plot(params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """``nas report`` writes STUDY-accuracy-vs-msrs.png when no --plot is given: an output too."""
    from redaudit.cli.guard import UsedFile

    if params.get("no_plot") or params.get("plot_path"):
        return [], []
    path = f"{params['study_name']}-accuracy-vs-msrs.png"
    return [], [UsedFile(path, f"the default plot {path}")]


report_command.redaudit_paths = _default_plot  # type: ignore[attr-defined]


@nas.command("export")
@click.argument("study_name", metavar="STUDY")
@click.option("--trial", "trial_number", type=count(0), default=None,
              help="Trial number (default: the choice of --rule).")
@click.option("--rule", type=click.Choice(["redundancy-aware", "accuracy"]), default="redundancy-aware",
              show_default=True, help="Which choice to export when --trial is not given.")
@click.option("--tolerance", type=number(0.0, 100.0), default=1.0, show_default=True)
@click.option("-o", "--output", type=OutputPath(), required=True, help="Output .onnx path.")
@click.option("--db", "db_url", type=DatabaseUrl(), default=None, help="Database URL (default: $REDAUDIT_DB or the history DB).")
@click.option("--artifacts", "artifact_dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding the trials' ONNX files.")
@click.option("--data", "data_file", type=InputPath(), default=None,
              help="The study's .npz, needed only to re-train when the artifact is not available.")
@_user_errors
def export_command(study_name: str, trial_number: int | None, rule: str, tolerance: float, output: str,
                   db_url: str | None, artifact_dir: str | None, data_file: str | None) -> None:
    """Write a trial's ONNX model (from the artifact store, else re-trained deterministically)."""
    from redaudit.nas.finalize import export_trial
    from redaudit.nas.select import candidates_of, select
    from redaudit.nas.storage import load_existing_study, open_storage

    study = load_existing_study(study_name, open_storage(db_url))
    if trial_number is None:
        trial_number = select(candidates_of(study), rule, tolerance / 100.0).number
    outcome = export_trial(study, trial_number, output, artifact_dir=artifact_dir, data_path=data_file)
    note = "identical to the recorded model" if outcome.matches_record else \
        "differs from the recorded model (other torch build or CPU); its metrics may differ slightly"
    stdout.print(f"wrote trial {trial_number} to {outcome.path} ({outcome.source}; sha256 "
                 f"{outcome.sha256[:12]}…, {note})")
