"""A W&B Report per experiment, built with wandb-workspaces: where a user looks at a grid in W&B.

``render`` calls ``publish`` when a report script runs with ``logger=wandb``. The Report has, for the experiment's
W&B group: the figure (the heatmaps, from the ``report-<experiment>`` run's ``figure`` image), the optimal LR against
the batch size (from that run's ``optima`` Table), B_noise against the target loss (from its ``b_noise`` Table), and
per target the loss drop of every point against its LR (from the points' flat summary keys, ``mirror.summary_keys``),
beside a parallel-coordinates panel of batch size, LR and the drops. Online it is saved to W&B and its URL printed;
offline (or when saving fails) its spec is written beside the figure as ``<experiment>.wandb_report.json``, which
``load`` turns back into the same Report, to save once online:

    python -c "from surge_repro.report.wandb_report import load; print(load('quickstart.wandb_report.json').save().url)"

Building or saving it never fails a report: a failure is a warning, and the figure, JSON and tables are written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def build(experiment: str, project: str, entity: str | None, targets: list[float], verdicts: list[str],
          criterion: str) -> Any:
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str, filters: str) -> Any:
        return wr.Runset(entity=entity or "", project=project, name=name, filters=filters)

    report_run = runset("report", f"Name == 'report-{experiment}'")
    points = runset("points", f"Group == '{experiment}' and JobType == 'train'")
    lines = [f"target {t:g}: {v}" for t, v in zip(targets, verdicts)]
    drops = [wr.ScatterPlot(title=f"loss drop over K steps at target {t:g}", x=wr.Config("optimizer.lr"),
                            y=wr.SummaryMetric(f"target/{t:g}/loss_drop"), log_x=True) for t in targets]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config("batch")),
               wr.ParallelCoordinatesPlotColumn(metric=wr.Config("optimizer.lr"), log=True)] + \
              [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(f"target/{t:g}/loss_drop")) for t in targets]
    return wr.Report(
        project=project, entity=entity or "", title=f"Surge: {experiment}",
        description=f"Optimal LR against batch size for {experiment} (criterion: {criterion}); 95% bootstrap "
                    f"intervals over seeds. Made by surge_repro's report from its store.",
        blocks=[
            wr.H1(f"{experiment}: the optimal LR against the batch size"),
            wr.UnorderedList(items=lines),
            wr.PanelGrid(runsets=[report_run], panels=[
                wr.MediaBrowser(title="the figure: heatmaps, optima, Eq 22 and Theorem 5", media_keys=["figure"]),
                wr.CustomChart(query={"summaryTable": {"tableKey": "optima"}}, chart_name="wandb/scatter/v0",
                               chart_fields={"x": "batch_size", "y": "lr_opt"},
                               chart_strings={"title": "optimal LR against batch size (every target, criterion)"}),
                wr.CustomChart(query={"summaryTable": {"tableKey": "b_noise"}}, chart_name="wandb/scatter/v0",
                               chart_fields={"x": "target_loss", "y": "b_noise"},
                               chart_strings={"title": "B_noise (Eq 22) against the target loss"}),
                wr.WeavePanelSummaryTable(table_name="optima"),
            ]),
            wr.H2("every point, per target"),
            wr.PanelGrid(runsets=[points], panels=[*drops, wr.ParallelCoordinatesPlot(columns=columns)]),
        ])


def spec(obj: Any) -> Any:
    """A Report as plain JSON: each wandb-workspaces object as its class name and public fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: spec(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init and f.name[0] != "_"
                  and f.name != "layout"}
        return {"type": type(obj).__name__, **fields}
    if isinstance(obj, (list, tuple)):
        return [spec(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): spec(v) for k, v in obj.items()}
    return obj


def rebuild(tree: Any) -> Any:
    """The inverse of ``spec``."""
    import wandb_workspaces.reports.v2 as wr

    if isinstance(tree, dict) and "type" in tree and hasattr(wr, str(tree["type"])):
        return getattr(wr, tree["type"])(**{k: rebuild(v) for k, v in tree.items() if k != "type"})
    if isinstance(tree, list):
        return [rebuild(x) for x in tree]
    if isinstance(tree, dict):
        return {k: rebuild(v) for k, v in tree.items()}
    return tree


def load(path: str | Path) -> Any:
    return rebuild(json.loads(Path(path).read_text()))


def publish(report: Any, mode: str | None, path: Path) -> str:
    """Save ``report`` to W&B when ``mode`` is online (its URL), else write its spec to ``path``; a save that fails
    writes the spec too (nothing is lost) and says why."""
    if mode == "online":
        try:
            return report.save().url
        except Exception as err:  # no network, no rights: the spec keeps it for later
            log.warning("W&B Report not saved (%s: %s); its spec is in %s", type(err).__name__, err, path)
    path.write_text(json.dumps(spec(report), indent=1) + "\n")
    return str(path)
