"""Rebuild a figure from the store: tidy table -> fits -> figure (PNG), the fitted numbers (JSON) and the tidy table
itself (``<experiment>.csv.gz``: the rows the fit read, one grid of the store) beside it.

The scripts in ``reports/`` are thin: each calls ``main`` here with its own file name, e.g.

    python reports/fig2_cnn5_fmnist.py                         # Fig. 2(b) and 2(c) from their experiments
    python reports/fig2_cnn5_fmnist.py +experiment=quickstart  # the quickstart's grid
    python reports/fig2_cnn5_fmnist.py logger=wandb            # also log figure and numbers to the W&B group
    python reports/fig2_cnn5_fmnist.py report.criterion=steps  # the optimal LR as the fewest steps to target

Arguments are Hydra overrides of ``conf/config.yaml``, so ``paths.store`` and the experiment names mean exactly what
they mean to ``run.py``. Which experiments a script draws, its title and the paper's panel names come from
``surge_repro.report.figures``. An experiment whose ``conf/experiment/<name>.yaml`` does not exist (yet) is still drawn
from the store under its name. With two or more targets the figure opens with B_noise against the target loss
(``b_noise_trend``: does it grow as training goes on, as Fig. 3 claims?) and Eq 21's line through it,
B_noise = B_* / L^(1/alpha_B) (``fit.eq21``, under the JSON's ``eq21`` key per criterion, with 95% intervals).

Each target also gets Theorem 5 (Eq 18) on the same runs (``TargetFit.theorem5``, a line of the text, a panel of the
figure): the largest mean drop of each B against Eq 18 at Eq 22's B_noise, and the B_noise Eq 18 alone gives the
drops, compared with Eq 22's.

The text, the JSON (each target's ``interval``, ``no_optimum``, ``tied_lrs``, ``off_interval`` and ``notes``) and the
figure say what a number cannot mean: a batch size without an optimum (no run reached the target, a tie), fewer
seeds than an interval needs (``fit.MIN_SEEDS``: then no interval and no verdict that rests on one), an estimate on
or outside its own interval (starred).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from surge_repro import provenance
from surge_repro.analysis.fit import (
    CRITERIA,
    CURVE_LAWS,
    NO_OPTIMUM,
    TargetFit,
    eq21,
    fit_experiment,
    lr_list,
)
from surge_repro.analysis.identify import CONFIDENCE, b_noise_trend, surge_verdict
from surge_repro.analysis.theory import LAWS
from surge_repro.config import (
    CONF_DIR,
    compose,
    overrides_help,
    print_cfg,
    shell_completion,
    without_flags,
)
from surge_repro.mirror import Mirror
from surge_repro.report import figures
from surge_repro.report.plots import fmt_b, fmt_ci, surge_figure
from surge_repro.store import (
    MixedGridsError,
    load_grid,
    merge_tables,
    one_grid,
    read_table,
    status_counts,
)

log = logging.getLogger("surge_repro.report.render")


def plain(value):
    """JSON without NaN (null instead), floats rounded to 6 significant digits, arrays as lists."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def why_none(fit: TargetFit, i: int) -> str:
    """Why batch size ``i`` has no optimal LR, in words (the tied LRs of a tie)."""
    if fit.no_optimum[i] == "tie":
        return f"tie of {lr_list(fit.tied_lrs[i])}"
    return NO_OPTIMUM.get(fit.no_optimum[i], "no optimum")


def describe(fit: TargetFit, steps_fit: TargetFit | None = None, confidence: float = CONFIDENCE) -> str:
    """The fitted numbers of one target as a few lines of text, with the verdicts; ``steps_fit`` (the fewest-steps
    criterion's fit) adds its optimum beside the main criterion's. A batch size without an optimum says why; an
    estimate on or outside its own interval is starred, and its note says what that means."""

    def ci(v, c, key=None):
        star = " *" if key in fit.off_interval else ""
        return (f"{v:.4g} [{c[0]:.4g}, {c[1]:.4g}]" if math.isfinite(v) and math.isfinite(c[0]) else f"{v:.4g}") + star

    def optimum(f: TargetFit, i: int) -> str:
        (lo, hi), lr = f.lr_opt_ci[i], f.lr_opt[i]
        if not math.isfinite(lr):
            return f"none ({why_none(f, i)})"
        return f"{lr:.3g} [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else f"{lr:.3g}"

    verdict = surge_verdict(fit, confidence)
    rule = fit.interval
    enough = rule["enough_seeds"]
    intervals = (f"95% intervals from {fit.n_boot} bootstrap replicates over seeds ({rule['distinct_resamples']} "
                 f"distinct resamples)" if enough else
                 f"no intervals: too few seeds ({fit.n_seeds} seeds give {rule['distinct_resamples']} distinct "
                 f"bootstrap resamples; an interval needs {rule['min_seeds']} seeds)")
    lines = [f"target {fit.target:g}: {fit.n_runs} runs ({len(fit.batch_sizes)} batch sizes x {len(fit.lrs)} LRs x "
             f"{fit.n_seeds} seeds), criterion {fit.criterion}, {intervals}",
             f"  verdict: {verdict['verdict']}: {verdict['text']}",
             f"  B_noise = {ci(fit.b_noise, fit.b_noise_ci, 'b_noise')}   "
             f"S_min = {ci(fit.s_min, fit.s_min_ci, 's_min')}   "
             f"(Eq 22 over {int(np.isfinite(fit.steps_at_opt).sum())} batch sizes)"]
    for law, (label, _) in LAWS.items():
        lines.append(f"  eps_max {label:24s} = {ci(fit.eps_max[law], fit.eps_max_ci[law], f'eps_max/{law}')}")
    lines.append(f"  observed peak of the optimal LR at B = {ci(fit.peak_batch_size, fit.peak_batch_size_ci)}")
    for law in CURVE_LAWS:  # B_noise from the optimal LRs' shape alone
        c = fit.curve[law]
        unfit = f" (no {'peak' if law == 'adam' else 'knee'} in {c['unfit_share']:.0%} of replicates)" \
            if c["unfit_share"] else ""
        lines.append(f"  {LAWS[law][0]} fitted to the optima, B_noise free: B_noise = "
                     f"{ci(c['b_noise'], c['b_noise_ci'], f'curve/{law}/b_noise')}, eps_max = "
                     f"{ci(c['eps_max'], c['eps_max_ci'], f'curve/{law}/eps_max')}{unfit}")
    lines.append(f"  B_simple measured in training (McCandlish; median of {fit.b_simple_n} runs at the target) = "
                 f"{ci(fit.b_simple, fit.b_simple_ci, 'b_simple')}" if fit.b_simple_n else
                 "  B_simple not measured (noise_scale.every=0, B = 1 only, or a BatchNorm model)")
    if enough:
        lines.append(f"  intervals: {rule['lattice']}" + ("; * an estimate on or outside its own interval (see the "
                                                          "notes)" if fit.off_interval else ""))
    extra = "   fewest steps [95%]" if steps_fit else ""
    lines.append(f"  B      optimal LR  95% interval         within 1 step  verdict           S at optimum{extra}")
    for i, b in enumerate(fit.batch_sizes):
        lr, (lo, hi) = fit.lr_opt[i], fit.lr_opt_ci[i]
        side = f" ({fit.edge_side[i]})" if fit.on_edge[i] else ""
        near = f"{verdict['within_one_step'][i]:.0%}" if enough and math.isfinite(lr) else "-"
        interval = f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else "-"
        steps = f"{fit.steps_at_opt[i]:.1f}" if math.isfinite(fit.steps_at_opt[i]) else "-"
        row = (f"  {b:<6g} {f'{lr:.3g}' if math.isfinite(lr) else 'none':<11s} {interval:<20s} {near:>8s}"
               f"       {(verdict['per_batch'][i] + side):<17s} {steps:<12s}")
        if steps_fit:
            row += f" {optimum(steps_fit, i)}"
        if not math.isfinite(lr):
            row += f"   <- no optimum: {why_none(fit, i)}"
        lines.append(row)
    lines += [f"  note: {n}" for n in fit.notes]
    return "\n".join(lines)


def theorem5_line(fit: TargetFit, unit: str = "examples") -> str:
    """Theorem 5 (Eq 18) in one line: the largest mean drop of each B [95%] (cross-fitted over two halves of the
    seeds: ``fit.max_drop``), Eq 18's dL_max at Eq 22's B_noise, the B_noise Eq 18 alone gives the drops against Eq
    22's, the verdict, and the note (why a number is missing)."""
    t5 = fit.theorem5

    def value(v: float, c, fmt=lambda x: f"{x:.3g}") -> str:
        return "n/a" if not math.isfinite(v) else fmt(v) + (f" [{fmt(c[0])}, {fmt(c[1])}]" if math.isfinite(c[0])
                                                             else "")

    drops = ", ".join(f"{b:g}: {value(d, c)}" for b, d, c in zip(t5["batch_sizes"], t5["max_drop"],
                                                                   t5["max_drop_ci"]))
    b18 = value(t5["b_noise_eq18"], t5["b_noise_eq18_ci"], fmt_b) if math.isfinite(t5["b_noise_eq18"]) else \
        "unresolved"
    return (f"  Theorem 5 (Eq 18): cross-fitted max drop per B ({t5['criterion']}; B: max [95%]) {drops}; dL_max "
            f"at Eq 22's B_noise = {value(t5['dl_max'], t5['dl_max_ci'])}; B_noise from the drops = {b18} against "
            f"Eq 22's {value(t5['b_noise_eq22'], t5['b_noise_eq22_ci'], fmt_b)} {unit}: {t5['verdict']} ({t5['note']})")


def eq21_line(line: dict, unit: str = "examples") -> str:
    """Eq 21 (``fit.eq21``) in one line: B_* and alpha_B [95%] over how many targets, and the note."""
    b_star, alpha = line["b_star"], line["alpha_b"]
    head = f"Eq 21 on the {line['criterion']} criterion's B_noise ({unit}): "
    if not math.isfinite(b_star):
        return head + f"no fit ({line['note']})"
    return (head + f"B_* = {fmt_ci(b_star, line['b_star_ci'], fmt_b)}, alpha_B = {fmt_ci(alpha, line['alpha_b_ci'])} "
            f"(1/alpha_B = {fmt_ci(line['inv_alpha_b'], line['inv_alpha_b_ci'])}) over {line['n_targets']} targets"
            + (f" ({line['note']})" if line["note"] else ""))


def _panel_labels(experiment: str, fits: list[TargetFit]) -> tuple[list[str] | None, list[str]]:
    """The paper's panel of each target, "(a)" to "(f)" where the registry gives its targets, and a note for each
    paper target the data lack."""
    item = figures.item_of(experiment)
    paper = item.paper_targets if item else ()
    if not paper:
        return None, []
    letter = {t: f"({chr(ord('a') + i)})" for i, t in enumerate(paper)}
    labels = [next((letter[p] for p in paper if abs(p - f.target) < 5e-4), "") for f in fits]
    missing = [p for p in paper if not any(abs(p - f.target) < 5e-4 for f in fits)]
    notes = [f"the paper's target {p:g} ({item.label}{letter[p]}) is not in the data" for p in missing]
    return labels, notes


def render(cfg: DictConfig, title: str, command: str | None = None) -> Path | None:
    """Fit and draw ``cfg.experiment_name`` from ``cfg.paths.store`` into ``cfg.paths.figures`` with the criterion,
    confidence and bootstrap size of ``cfg.report``; returns the PNG path, or None if the store has no finished runs.
    The fewest-steps criterion is fitted beside the chosen one and drawn over it."""
    experiment, store, out_dir = cfg.experiment_name, cfg.paths.store, Path(cfg.paths.figures)
    criterion, confidence, n_boot = str(cfg.report.criterion), float(cfg.report.confidence), int(cfg.report.n_boot)
    if criterion not in CRITERIA:
        raise ValueError(f"report.criterion={criterion!r}: choose one of {', '.join(CRITERIA)}. "
                         f"Fix: report.criterion=drop")
    source = cfg.report.get("table")  # a committed tidy table stands in for the store (reports/examples)
    added = [str(p) for p in cfg.report.get("tables") or []]  # committed tables of other rounds, beside the store
    where = ", ".join([source or f"{store}/{experiment}", *added])
    table = read_table(source) if source else load_grid(store, experiment)
    if added:
        table = merge_tables([table, *(read_table(p) for p in added)])
    table = one_grid(table, list(cfg.report.get("select") or []), where=where)
    if table.empty:
        print(f"{experiment}: no finished runs in {where}. Run: python run.py -m +experiment={experiment}")
        return None
    unit = "/".join(sorted(table["batch_unit"].dropna().astype(str).unique())) or "examples"
    fits = fit_experiment(table, n_boot=n_boot, criterion=criterion)
    steps_fits = fit_experiment(table, n_boot=n_boot, criterion="steps") if criterion != "steps" else None
    verdicts = [surge_verdict(f, confidence) for f in fits]
    steps_verdicts = [surge_verdict(f, confidence) for f in steps_fits] if steps_fits else None
    trend = b_noise_trend(fits)
    lines21 = {group[0].criterion: eq21(group) for group in (fits, steps_fits) if group and len(group) >= 2}
    labels, label_notes = _panel_labels(experiment, fits)
    counts = (Counter(table.drop_duplicates("signature")["status"]) if source or added
              else status_counts(store, experiment))
    out_dir.mkdir(parents=True, exist_ok=True)
    png, js = out_dir / f"{experiment}.png", out_dir / f"{experiment}.json"
    tidy = out_dir / f"{experiment}.csv.gz"  # the rows the fit read: re-fittable without the store
    table.to_csv(tidy, index=False)
    optima = optima_table(fits, verdicts, steps_fits, steps_verdicts)
    flat = out_dir / f"{experiment}.optima.csv"  # one row per (criterion, target, B): the JSON's optima, flat
    optima.to_csv(flat, index=False)
    fig = surge_figure(fits, f"{title}\n{experiment}: {sum(counts.values())} points "
                             f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); optimal LR by "
                             f"{criterion}", verdicts=verdicts, overlay=steps_fits,
                       overlay_verdicts=steps_verdicts, unit=unit, labels=labels, trend=trend, eq21=lines21)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    payload = {
        "experiment": experiment, "store": source or str(Path(store).resolve()), "tables": added, "title": title,
        "command": command, "batch_unit": unit, "notes": label_notes,
        "criterion": criterion, "criterion_means": CRITERIA[criterion], "confidence": confidence,
        "points": dict(counts), "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": provenance.code_state(), "figure": png.name, "table": tidy.name,
        "targets": [{**f.to_dict(), "verdict": v} for f, v in zip(fits, verdicts)],
        "steps_criterion": [{**f.to_dict(), "verdict": v} for f, v in zip(steps_fits, steps_verdicts)]
        if steps_fits else None,
        "b_noise_trend": trend, "eq21": lines21 or None, "panels": labels,
    }
    js.write_text(json.dumps(plain(payload), indent=1))
    print(f"\n{title} -- {experiment}")
    print(f"optimal LR: {CRITERIA[criterion]}")
    for i, fit in enumerate(fits):
        print(describe(fit, steps_fits[i] if steps_fits else None, confidence))
        print(theorem5_line(fit, unit))
        if steps_fits:
            print(f"  fewest-steps criterion: {steps_verdicts[i]['verdict']}: {steps_verdicts[i]['text']}")
    if trend:
        print(f"B_noise against the target loss ({unit}): {trend['verdict']}: {trend['text']}")
        for t, b, ci in zip(trend["targets"], trend["b_noise"], trend["b_noise_ci"]):
            print(f"  target {t:<8g} B_noise = {fmt_b(b)}" + (f" [{fmt_b(ci[0])}, {fmt_b(ci[1])}]"
                                                               if math.isfinite(ci[0]) else ""))
    for line in lines21.values():
        print(eq21_line(line, unit))
    for note in label_notes:
        print(f"note: {note}")
    print(f"figure: {png}\nnumbers: {js}\ntable: {tidy}\noptima: {flat}")
    mirror = Mirror(cfg.logger, group=experiment, name=f"report-{experiment}", job_type="report",
                    config={"experiment": experiment, "criterion": criterion}, directory=out_dir)
    mirror.log_image("figure", png)
    mirror.log_table("grid", table)
    mirror.log_table("optima", optima)
    mirror.log_table("b_noise", b_noise_table(fits, steps_fits))
    mirror.log_artifact(f"report-{experiment}", "report", [png, js, tidy, flat])
    if mirror.run is not None:  # the W&B Report of this experiment: saved online, its spec written offline
        from surge_repro.report import wandb_report

        try:
            where = wandb_report.publish(
                wandb_report.build(experiment, str(cfg.logger.project), cfg.logger.get("entity"),
                                   [f.target for f in fits], [v["verdict"] for v in verdicts], criterion),
                mirror.mode, out_dir / f"{experiment}.wandb_report.json")
            print(f"W&B report: {where}")
        except Exception as err:  # W&B never costs a figure: the files above are written
            log.warning("W&B Report not built (%s: %s)", type(err).__name__, err)
    mirror.finish({f"target_{f.target:g}": {"b_noise": f.b_noise, "s_min": f.s_min, "verdict": v["verdict"],
                                            "b_simple": f.b_simple, "b_noise_eq2_fit": f.curve["adam"]["b_noise"],
                                            "b_noise_eq18": f.theorem5["b_noise_eq18"], **{
        f"eps_max_{law}": e for law, e in f.eps_max.items()}} for f, v in zip(fits, verdicts)})
    return png


def optima_table(fits: list[TargetFit], verdicts: list[dict], steps_fits: list[TargetFit] | None = None,
                 steps_verdicts: list[dict] | None = None) -> pd.DataFrame:
    """The optima of every (criterion, target, batch size) as one flat table: the optimal LR with its interval and
    agreement, whether it is on the grid's edge or missing (and why), S and E there, and the target's B_noise
    (Eq 22) and verdict. What W&B's Table and a spreadsheet need, without the JSON's nesting."""
    rows = []
    for group, group_verdicts in ((fits, verdicts), (steps_fits or [], steps_verdicts or [])):
        for fit, verdict in zip(group, group_verdicts):
            for i, b in enumerate(fit.batch_sizes):
                lo, hi = fit.lr_opt_ci[i]
                rows.append({
                    "criterion": fit.criterion, "target_loss": fit.target, "batch_size": b,
                    "lr_opt": fit.lr_opt[i], "lr_opt_lo": lo, "lr_opt_hi": hi,
                    "agreement": fit.lr_opt_agreement[i], "on_edge": bool(fit.on_edge[i]),
                    "edge_side": fit.edge_side[i], "no_optimum": fit.no_optimum[i],
                    "steps_at_opt": fit.steps_at_opt[i], "examples_at_opt": fit.examples_at_opt[i],
                    "b_noise": fit.b_noise, "b_noise_lo": fit.b_noise_ci[0], "b_noise_hi": fit.b_noise_ci[1],
                    "n_seeds": fit.n_seeds, "verdict": verdict["verdict"]})
    return pd.DataFrame(rows)


def b_noise_table(fits: list[TargetFit], steps_fits: list[TargetFit] | None = None) -> pd.DataFrame:
    """B_noise of every (criterion, target), with its interval, beside B_simple and the peak of Eq 2 fitted to the
    optima: the numbers of the figure's top panel, flat."""
    rows = []
    for fit in list(fits) + list(steps_fits or []):
        adam = fit.curve.get("adam", {})
        rows.append({"criterion": fit.criterion, "target_loss": fit.target, "b_noise": fit.b_noise,
                     "b_noise_lo": fit.b_noise_ci[0], "b_noise_hi": fit.b_noise_ci[1], "b_simple": fit.b_simple,
                     "b_simple_lo": fit.b_simple_ci[0], "b_simple_hi": fit.b_simple_ci[1],
                     "b_noise_eq2_fit": adam.get("b_noise"), "n_seeds": fit.n_seeds})
    return pd.DataFrame(rows)


def compose_for(experiment: str, argv: Sequence[str]) -> DictConfig:
    """The config of ``experiment`` with the overrides ``argv``; an experiment without a config file yet is composed
    by name only (its store directory), which is all a report reads of it."""
    if (CONF_DIR / "experiment" / f"{experiment}.yaml").exists():
        return compose(list(argv) + [f"+experiment={experiment}"])
    print(f"{experiment}: no conf/experiment/{experiment}.yaml yet; drawing store/{experiment} by its name")
    return compose(list(argv) + [f"experiment_name={experiment}"])


def _script_doc(script: str) -> str:
    """The report script's docstring (its examples), or this module's where the script is not at hand."""
    import ast

    path = Path(script)
    path = path if path.exists() else figures.REPORTS / path.name
    try:
        return ast.get_docstring(ast.parse(path.read_text())) or __doc__
    except OSError:
        return __doc__


def main(script: str, argv: Sequence[str] | None = None) -> int:
    """Render the experiments that ``surge_repro.report.figures`` gives the report script ``script`` (a path or file
    name), or the one named by a ``+experiment=`` override in ``argv``. Exit status 0 when at least one was drawn."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if overrides_help(argv, f"python reports/{Path(script).name}", _script_doc(script)):
        return 0
    if shell_completion(argv, str(script)):
        return 0
    title, items = figures.by_script(script)
    if "--cfg" in argv:
        named = [a.split("=", 1)[1] for a in argv if a.startswith("+experiment=")]
        rest = [a for a in without_flags(argv) if not a.startswith("+experiment=")]
        for exp in named or [i.experiment for i in items]:
            print_cfg(argv, compose_for(exp, rest))
        return 0
    command = " ".join(["python", f"reports/{Path(script).name}", *argv])
    named = [a.split("=", 1)[1] for a in argv if a.startswith("+experiment=")]
    rest = [a for a in argv if not a.startswith("+experiment=")]
    rendered = 0
    for exp in named or [i.experiment for i in items]:
        try:
            rendered += render(compose_for(exp, rest), title, command) is not None
        except MixedGridsError as err:  # nothing drawn from a mix; the message names the keys and the fix
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0 if rendered else 1
