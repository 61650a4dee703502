"""`redaudit prune`: list removable blocks, remove the most redundant ones, verify, save."""
from __future__ import annotations

import json
import math
from typing import Any

import click
from rich.table import Table

from redaudit.cli.common import console, prepare_output_paths, progress_bar, user_errors
from redaudit.cli.mlflow_options import mlflow_options
from redaudit.cli.render import print_warnings
from redaudit.cli.scan_options import scan_options, scan_spec
from redaudit.prune.heal import HEAL_METHODS
from redaudit.prune.policies import POLICIES


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _score_title(policy: str) -> str:
    return {"cka": "CKA in/out", "bi": "cos in/out"}.get(policy, f"{policy} score")


def render_candidates(result) -> None:
    table = Table(title=f"Removable blocks of {result.source}", title_justify="left")
    score = _score_title(result.policy)
    for column in ("#", "block (output tensor)", "kind", score, "params", "FLOPs"):
        table.add_column(column, justify="right" if column in ("#", score, "params", "FLOPs") else "left")
    for item in result.candidates:
        table.add_row(str(item.index), _short(item.name), item.kind, _num(item.similarity),
                      f"{100 * item.param_share:.1f}%", f"{100 * item.flop_share:.1f}%")
    console.print(table)
    kind = "real" if result.probe_real else "synthetic"
    console.print(f"{len(result.candidates)} candidate(s), measured on {result.samples} {kind} probe samples. "
                  f"Policy {result.policy}: {result.policy_description}.")


def render_result(result) -> None:
    removed = Table(title="Removed", title_justify="left")
    removed.add_column("block"), removed.add_column(_score_title(result.policy), justify="right")
    similarity = {item.name: item.similarity for item in result.candidates}
    for step, name in enumerate(result.removed):
        value = result.steps[step]["similarity"] if result.steps else similarity.get(name)
        removed.add_row(_short(name), _num(value))
    console.print(removed)
    table = Table(title="Verification (pruned vs original)", title_justify="left")
    for column in ("", "original", "pruned", "pruned ÷ original"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("parameters", f"{result.params_before:,}", f"{result.params_after:,}", _num(result.params_ratio, 3))
    table.add_row("file size (bytes)", f"{result.size_before:,}", f"{result.size_after:,}", _num(result.size_ratio, 3))
    if result.latency is not None:
        lat = result.latency
        table.add_row(f"latency, batch {lat.batch} (ms)", _num(lat.original_ms, 3), _num(lat.pruned_ms, 3),
                      _num(lat.ratio, 3))
    table.add_row("MSRS", _num(result.msrs_before, 2), _num(result.msrs_after, 2), "")
    console.print(table)
    agreement = Table(title="Output agreement", title_justify="left")
    for column in ("output", "max abs err", "rel err", "cosine mean", "cosine min", "top-1 agree"):
        agreement.add_column(column, justify="left" if column == "output" else "right")
    for item in result.agreement:
        top1 = "—" if item.top1_agreement is None else f"{100 * item.top1_agreement:.1f}%"
        agreement.add_row(item.name, f"{item.max_abs_error:.3g}", f"{item.relative_error:.3g}",
                          _num(item.cosine_mean, 5), _num(item.cosine_min, 5), top1)
    console.print(agreement)
    for span in result.healed:
        after = len(span.get("fitted_after") or ())
        console.print(f"Healed span {span['span']['entry']} → {span['span']['exit']}: {span['how']}"
                      + (f" (mixing tokens with {span['attention']})" if span.get("attention") else "")
                      + (f" (held-out relative error {span['heldout_error']:.3g}, plain removal "
                         f"{span['removal_error']:.3g})" if isinstance(span.get("heldout_error"), float)
                         and math.isfinite(span["heldout_error"]) else "")
                      + (f"; fitted on the model with {after} earlier span(s) healed" if after else ""),
                      highlight=False)
    where = f"written to {result.output_path}" if result.output_path else "not written (pass -o PATH to save it)"
    console.print(f"Removed {len(result.removed)} of {len(result.candidates)} block(s); pruned model {where}.")
    if result.recorded_scan_id is not None:
        console.print(f"Recorded in the history as scan {result.recorded_scan_id}.")


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--list", "list_only", is_flag=True, help="Show the removable blocks and their similarity, remove nothing.")
@click.option("--remove", type=click.IntRange(1), help="Remove the N blocks most similar to their input.")
@click.option("--target-params", type=float, metavar="PCT", help="Remove blocks until at most PCT % of the parameters remain.")
@click.option("--max-drift", type=float, metavar="X", help="Stop before 1 - output cosine similarity exceeds X.")
@click.option("--blocks", metavar="NAME,...", help="Remove these blocks (names or numbers from --list).")
@click.option("--policy", type=click.Choice(list(POLICIES)), default="bi", show_default=True,
              help="How blocks are chosen: bi (ShortGPT Block Influence: token cosine of block input and output; "
                   "never worse than cka in the docs/prune.md comparison), cka (RedTest, input/output CKA), angular "
                   "(best contiguous span, Gromov et al.), greedy (SLEB; best without healing on MiniLM for 2+ "
                   "layers, one model run per candidate and step), random (seeded baseline).")
@click.option("--heal", type=click.Choice(list(HEAL_METHODS)), default="none", show_default=True,
              help="linear: replace each removed span by a least-squares linear map fitted on calibration "
                   "activations (later spans on the model with the earlier ones healed; folded into the next "
                   "linear op where possible). attention: the same map plus a token-mixing term through the "
                   "attention pattern of the layer before the span (transformers; best on MiniLM in "
                   "docs/prune.md; plain map where no attention is upstream). Combines with --iterative.")
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), default=None,
              help=".npz to fit --heal on (default: the probe inputs, which also verify the result).")
@click.option("--min-cosine", type=float, default=0.9, show_default=True,
              help="Refuse to write a pruned model whose mean output cosine to the original is lower.")
@click.option("--min-top1", type=float, default=None, help="Also refuse below this top-1 agreement (classifiers).")
@click.option("--force", is_flag=True, help="Write the pruned model even below --min-cosine/--min-top1.")
@click.option("--iterative", is_flag=True, help="Re-scan after each removal and pick the next block on the new model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the pruned model here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--record", metavar="NAME", help="Store the pruned model in the history as a version derived from the original.")
@click.option("--label", help="Label of the recorded pruned version.")
@click.option("--db", metavar="URL", help="History database (default: the history's default).")
@scan_options
@mlflow_options
@user_errors
def prune_command(model: str, list_only: bool, remove: int | None, target_params: float | None,
                  max_drift: float | None, blocks: str | None, policy: str, heal: str, calibrate: str | None,
                  min_cosine: float, min_top1: float | None, force: bool, iterative: bool, output: str | None,
                  as_json: bool, no_latency: bool, record: str | None, label: str | None, db: str | None,
                  **options: Any) -> None:
    """Remove the blocks of MODEL whose output repeats their input (RedTest similarity-guided
    pruning), verify the result against the original and save it with -o.

    The probe options are scan's; --level/--tap only shape the MSRS before/after."""
    from redaudit.cli.history import check_record_options
    from redaudit.cli.mlflow_options import logged_line, mlflow_target
    from redaudit.prune import prune_model

    tracking = mlflow_target(options)
    if record is not None:
        check_record_options(record, label, db)  # a bad --record/--db fails before any work
    names = [name for name in blocks.split(",") if name.strip()] if blocks else None
    prepare_output_paths(output)  # a missing or read-only folder fails now, not after the work
    spec = scan_spec(options)
    with progress_bar("pruning") as update:
        result = prune_model(model, remove=remove, target_params=target_params, max_drift=max_drift,
                             blocks=names, iterative=iterative, list_only=list_only, output=output,
                             latency=not no_latency, record=record, label=label, db=db, policy=policy,
                             heal=heal, calibrate=calibrate, min_cosine=min_cosine, min_top1=min_top1, force=force,
                             spec=spec, progress=update)
    if tracking is not None:
        from redaudit.integrations.mlflow import log_prune

        logged_line(log_prune(result, tracking, spec=spec))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_warnings(result.warnings)  # on stderr, before the tables: they change how the tables read
    render_candidates(result)
    if not list_only:
        render_result(result)
