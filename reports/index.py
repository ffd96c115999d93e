"""Rebuild every figure whose experiment has data in the store, and write reports/figures/index.html: the registry's
items, then every other experiment the store holds (a user's own grids), each with its figure, verdicts, JSON and
flat table of optima (``<experiment>.optima.csv``).

    python reports/index.py                                    # store/ -> reports/figures/index.html
    python reports/index.py paths.store=/data/store report.n_boot=200
    python reports/index.py rounds=4                           # N: the sweeps at 4 rounds, not their configured ones

Arguments are Hydra overrides, as for every report script. The items (paper figure -> experiment -> report script)
are ``surge_repro.report.figures.ITEMS``. The page holds a table (item, experiment, run command, report command, status:
done / partial k of N / not run, or a missing config), then per drawn figure its PNG, its fitted numbers and n (from
the JSON beside it) and the command that made it. Items with ``store=False`` (Fig. 1, analytic) are drawn every
time by their script's ``render(out_dir, command=...)``, with the "summary" lines of their JSON. Plain HTML; the PNGs
are linked by relative paths. Exit status 0 unless a figure failed to draw.
"""

import html
import json
import runpy
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

from surge_repro import provenance
from surge_repro.analysis.theory import LAWS
from surge_repro.config import compose, overrides_help, print_cfg, shell_completion, without_flags
from surge_repro.report import figures, render
from surge_repro.report.plots import fmt_b
from surge_repro.store import experiments_in

STYLE = """body { font-family: sans-serif; max-width: 1500px; margin: 1em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #bbb; padding: 3px 7px; text-align: left; vertical-align: top; }
code { background: #f3f3f3; }
.done { background: #d9f2d9; } .partial { background: #fff3c4; } .failed { background: #f8d0d0; }
img { max-width: 100%; border: 1px solid #ddd; }"""


def _ci(value, ci, fmt=lambda v: f"{v:.3g}") -> str:
    if value is None:
        return "n/a"
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and None not in ci else fmt(value)


def numbers_table(numbers: dict) -> str:
    """The fitted numbers of each target, with n, as an HTML table."""
    unit = numbers.get("batch_unit", "examples")
    head = ["target", "runs (B x LR x seeds)", "verdict", f"B_noise ({unit})", "S_min",
            *[f"eps_max {label}" for label, _ in LAWS.values()], f"peak of the optimal LR ({unit})"]
    rows = []
    for t in numbers["targets"]:
        v = t["verdict"]
        rows.append([f"{t['target']:g}", f"{t['n_runs']} ({len(t['batch_sizes'])} x {len(t['lrs'])} x "
                     f"{t['n_seeds']})", f"{v['verdict']}: {v['per_batch'].count('resolved')} of "
                     f"{len(t['batch_sizes'])} optima resolved", _ci(t["b_noise"], t["b_noise_ci"], fmt_b),
                     _ci(t["s_min"], t["s_min_ci"]),
                     *[_ci(t["eps_max"][law], t["eps_max_ci"][law]) for law in LAWS],
                     _ci(t["peak_batch_size"], t["peak_batch_size_ci"], fmt_b)])
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def figure_section(item: figures.Item, numbers: dict, png: Path) -> str:
    trend = numbers.get("b_noise_trend")
    optima = png.with_name(f"{item.experiment}.optima.csv")  # the flat table of the optima, beside the JSON
    points = ", ".join(f"{n} {s}" for s, n in sorted(numbers["points"].items()))
    parts = [f'<h2 id="{item.experiment}">{html.escape(item.label)}: {html.escape(item.shows)}</h2>',
             f"<p>experiment <code>{item.experiment}</code>: {points}; optimal LR by "
             f"<b>{html.escape(numbers['criterion'])}</b> ({html.escape(numbers['criterion_means'])}); "
             f"95% bootstrap intervals over seeds. Made by <code>{html.escape(numbers.get('command') or '')}</code>"
             f" from <code>{html.escape(numbers['store'])}</code>; numbers: "
             f'<a href="{png.with_suffix(".json").name}">{png.with_suffix(".json").name}</a>'
             + (f', optima: <a href="{optima.name}">{optima.name}</a>' if optima.exists() else "") + ".</p>",
             numbers_table(numbers)]
    if trend:
        parts.append(f"<p>B_noise against the target loss: <b>{html.escape(trend['verdict'])}</b>: "
                     f"{html.escape(trend['text'])}</p>")
    parts += [f"<p>note: {html.escape(n)}</p>" for n in numbers.get("notes") or []]
    parts.append(f'<p><a href="{png.name}"><img src="{png.name}" alt="{html.escape(item.label)}: '
                 f'{item.experiment}"></a></p>')
    return "\n".join(parts)


def analytic_section(item: figures.Item, png: Path) -> str:
    """An analytic figure (no store): its PNG and the lines of its JSON's "summary"."""
    numbers = json.loads(png.with_suffix(".json").read_text())
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in numbers.get("summary", []))
    return (f'<h2 id="{item.experiment}">{html.escape(item.label)}: {html.escape(item.shows)}</h2>\n'
            f"<p>Made by <code>{html.escape(numbers.get('command') or item.report_command)}</code>; numbers: "
            f'<a href="{png.with_suffix(".json").name}">{png.with_suffix(".json").name}</a>.</p><ul>{lines}</ul>\n'
            f'<p><a href="{png.name}"><img src="{png.name}" alt="{html.escape(item.label)}"></a></p>')


def status_table(rows: list[tuple[figures.Item, dict, Path | None, str | None]], argv: list[str]) -> str:
    # each command gets the overrides that mean something to it: run.py does not draw, a report does not sweep
    run = "".join(f" {a}" for a in argv if not a.startswith(("paths.figures=", "report.")))
    rep = "".join(f" {a}" for a in argv if not a.startswith("rounds="))
    head = ["paper item", "shows", "experiment", "run command", "report command", "status", "figure"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for item, status, png, error in rows:
        state = "failed" if error else status["state"].replace(" ", "-")
        figure = f'<a href="#{item.experiment}">{png.name}</a>' if png else html.escape(error or "")
        own = item.store  # an analytic script takes its own flags, not Hydra overrides
        cells = [html.escape(item.label), html.escape(item.shows), f"<code>{item.experiment}</code>",
                 f"<code>{html.escape(item.run_command + (run if own else ''))}</code>",
                 f"<code>{html.escape(item.report_command + (rep if own else ''))}</code>",
                 f'<span class="{state}">{html.escape(status["text"])}</span>', figure]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table>"


def yours(experiment: str) -> figures.Item:
    """An experiment of the store that the registry does not know: drawn as Fig. 2's script draws any grid."""
    return figures.Item(label="your grid", experiment=experiment, script="fig2_cnn5_fmnist.py",
                        shows="an experiment of this store outside the paper's registry", default=False)


def main(argv: list[str]) -> int:
    if overrides_help(argv, "python reports/index.py", __doc__) or shell_completion(argv, __file__):
        return 0
    if print_cfg(argv, compose(without_flags(argv))):
        return 0
    if any(a.startswith("+experiment=") for a in argv):
        print("reports/index.py draws every experiment of surge_repro.report.figures.ITEMS; for one, run its report "
              "script")
        return 2
    root = compose(argv)
    out_dir = Path(root.paths.figures)
    shown = "".join(f" {a}" for a in argv)
    rows, sections = [], []
    registry = {item.experiment for item in figures.ITEMS}
    store = Path(root.paths.store)
    theirs = [e for e in (experiments_in(store, []) if store.is_dir() else []) if e not in registry]
    # the registry's items, then every other experiment of the store (a user's own grids), drawn the same way
    for item in list(figures.ITEMS) + [yours(e) for e in theirs]:
        png, error = None, None
        if not item.store:  # analytic: always drawn, nothing to count
            status = {"state": "done", "in_store": 0, "text": "analytic (needs no store)"}
            try:
                script = runpy.run_path(str(figures.REPORTS / item.script))
                png = script["render"](out_dir, command=item.report_command)
                sections.append(analytic_section(item, png))
            except Exception as err:  # one figure that cannot be drawn must not hide the others
                traceback.print_exc()
                error = f"failed to draw: {type(err).__name__}: {err}"
            rows.append((item, status, png, error))
            print(f"{item.label:18s} {item.experiment:32s} {status['text']}" + (f"  -> {png}" if png else "")
                  + (f"  {error}" if error else ""))
            continue
        try:
            status = figures.sweep_status(item, argv)
        except Exception as err:  # a config that does not compose: say so in its row, draw the others
            status = {"state": "failed", "in_store": 0, "text": f"sweep does not compose: {type(err).__name__}"}
            error = str(err).splitlines()[0]
        if status["in_store"]:  # the figure draws whatever is final in store/<experiment>, a partial grid too
            try:
                cfg = render.compose_for(item.experiment, argv)
                png = render.render(cfg, figures.TITLES[item.script], item.report_command + shown)
            except Exception as err:  # one figure that cannot be drawn must not hide the others
                traceback.print_exc()
                error = f"failed to draw: {type(err).__name__}: {err}"
        if png:
            sections.append(figure_section(item, json.loads(png.with_suffix(".json").read_text()), png))
        rows.append((item, status, png, error))
        print(f"{item.label:18s} {item.experiment:32s} {status['text']}" + (f"  -> {png}" if png else "")
              + (f"  {error}" if error else ""))
    code = provenance.code_state()
    store = html.escape(str(Path(root.paths.store).resolve()))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>surge_repro: figures</title><style>{STYLE}</style></head><body>
<h1>Surge phenomenon (Li et al. 2024): the reproduction's figures</h1>
<p>Generated {datetime.now(timezone.utc).isoformat(timespec="seconds")} from the store
<code>{store}</code> by <code>python reports/index.py{html.escape(shown)}</code>;
code {html.escape(str(code.get("git_sha")))}{" (dirty)" if code.get("git_dirty") else ""}. Status counts the
points of each experiment's sweep that are final (done, capped or diverged) in the store.</p>
{status_table(rows, argv)}
{"".join(s + chr(10) for s in sections) or "<p>No experiment has data in this store yet.</p>"}
</body></html>
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(page)
    print(f"index: {out_dir / 'index.html'}")
    return 1 if any(error for *_, error in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
