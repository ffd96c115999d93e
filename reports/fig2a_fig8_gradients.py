"""Fig. 2(a) and Fig. 8 from per-example gradients, with McCandlish's B_simple at the same checkpoints.

``--figure`` picks the paper item, and with it the point trained and the options (the registry:
``surge_repro.report.figures.GRADIENTS``; config overrides and options given here win):

- ``--figure 2a`` (the default), Fig. 2(a): the paper's CNN on Fashion-MNIST with Adam, B = 8, LR 1e-3, checkpoints
  0 and 300; writes reports/figures/fig2a_gradients.png and .json.
- ``--figure 8``, Fig. 8, which the paper draws from MoE training: the fine-grained MoE (model=moe_shared) on
  RedPajama-Data-1T-Sample with Adam, B = 65,536 tokens (128 sequences of 512), LR 1e-3, checkpoints 0 and 1000; the
  coordinates shown are, in each MoE part (router, routed experts, shared expert), the one with the largest |mu|
  and one at random (``diagnostics.MOE_PARTS`` says why). The expert loop does not vmap, so the per-sequence
  gradients come from a loop and the Hessian part is off. Writes reports/figures/fig8_moe_gradients.png and .json.
  Not run here: it needs RedPajama (``python -m surge_repro.tasks.prepare task=redpajama``, from the hub), and a
  79M-parameter model's per-sequence gradients are meant for a GPU (its time is not measured). The tests run this
  path on a tiny MoE (model=moe_tiny) on a RedPajama folder in the real on-disk format.

Trains the point to each checkpoint step and there takes the gradient of each of N training examples (sequences,
for a language task) (``surge_repro.run.diagnostics``). Draws:

- top row, Fig. 2(a): per checkpoint, the histogram over parameters of log10(pi sigma_i^2 / (2 mu_i^2)), Theorem 3's
  per-coordinate bound (it needs B << it for every i), with its minimum, 1%, 5% and median marked, the trained batch
  size, and pi N / 2, where a coordinate with mean 0 lands (ratios near it are "mean not resolved with N examples");
- middle row, Fig. 8: at the last checkpoint, the per-example gradient of a few coordinates (largest |mu|, random)
  with the fitted Gaussian, and their skewness, excess kurtosis and KS distance (Lilliefors' 5% value beside it);
- bottom row: the same coordinates as means of B examples (resampled from the N), the minibatch gradient that
  Theorem 2 models as Gaussian;
- in each top panel's title, Eq 14's B_noise (also drawn as a line: Theorem 3's peak, B_peak = B_noise, Eq 15) with
  its about-95% interval and the HVPs it took, beside B_simple; Eq 16's eps_max and McCandlish's Eq 1 eps_max and
  B_noise below it (``surge_repro.run.diagnostics``: Hessian-vector products, Hutchinson's diagonal; ``--hessian-probes
  0`` skips them).

Config overrides are Hydra's ``key=value`` (passed to ``surge_repro.config.compose``); options are argparse's::

    python reports/fig2a_fig8_gradients.py --figure 2a
    python reports/fig2a_fig8_gradients.py paths.data=data --steps 0,200,1000 --examples 2048
    python -m surge_repro.tasks.prepare task=redpajama && python reports/fig2a_fig8_gradients.py --figure 8

The JSON holds the quantiles, B_simple, normality, each chosen coordinate by parameter[index] (and MoE part), and
the Eq 14 / 16 / 1 values with their intervals per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from surge_repro.analysis import gradient_stats  # noqa: E402
from surge_repro.config import compose  # noqa: E402
from surge_repro.report.figures import GRADIENTS  # noqa: E402
from surge_repro.run import diagnostics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "reports" / "figures"
MARKS = [("min", "min", "tab:red"), ("q01", "1%", "tab:orange"), ("q05", "5%", "tab:olive"),
         ("q50", "median", "tab:green")]


def overrides_with_defaults(overrides: list[str], figure: str = "2a") -> list[str]:
    """The figure's point, then the user's overrides: a user's key replaces the figure's (Hydra refuses a group
    given twice)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [d for d in GRADIENTS[figure].point if d.split("=", 1)[0] not in given] + overrides


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def short(name: str) -> str:
    """A coordinate's name in a panel title: transformers' leading ``model.`` dropped (the JSON keeps it)."""
    return name.removeprefix("model.")


def _gauss_panel(ax, v, nm, title: str, xlabel: str) -> None:
    """Histogram of ``v`` with the Gaussian of its mean and std, and its normality statistics."""
    lo, hi = np.quantile(v, [0.005, 0.995])  # heavy tails would squash the bulk into one bin
    lo, hi = min(lo, nm["mean"] - 3 * nm["std"]), max(hi, nm["mean"] + 3 * nm["std"])
    inside = v[(v >= lo) & (v <= hi)]
    ax.hist(inside, bins=50, range=(lo, hi), density=True, color="tab:blue", alpha=0.6)
    if nm["std"] > 0:
        x = np.linspace(lo, hi, 300)
        ax.plot(x, np.exp(-0.5 * ((x - nm["mean"]) / nm["std"]) ** 2) / (nm["std"] * math.sqrt(2 * math.pi)),
                color="k", lw=1.2)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_title(title, fontsize=8)
    ax.text(0.02, 0.97, f"skew {_fmt(nm['skewness'])}\nexc. kurt {_fmt(nm['excess_kurtosis'])}\n"
                        f"KS {_fmt(nm['ks'])} (5%: {nm['ks_crit_5pct']:.2g})\n{len(v) - len(inside)} outside",
            transform=ax.transAxes, fontsize=7, va="top")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_yticks([])


def hessian_lines(s: dict) -> str:
    """The Eq 14 / 16 / 1 lines of a checkpoint's title (B_simple alone without them)."""
    h = s.get("hessian")
    if not h:
        return f"B_simple = {_fmt(s['b_simple'])}"
    text = gradient_stats.interval_text
    return (f"Eq 14 B_noise = {text(h['b_noise'])} ({h['n_hvp']} HVPs), B_simple = {_fmt(s['b_simple'])}\n"
            f"Eq 16 eps_max = {text(h['eps_max'])}; Eq 1 (SGD): B_noise = {text(h['b_noise_sgd'])}, "
            f"eps_max = {text(h['eps_max_sgd'])}")


def draw(points: list, cfg, png: Path, examples: int, figure: str = "2a") -> None:
    coords = points[-1].stats["coordinates"]
    b = points[-1].stats["batch_examples"]  # examples (sequences of a token task): what the ratio compares with
    width = 3.3 * max(len(coords), 2 * len(points), 4)
    fig = plt.figure(figsize=(width, 11), layout="constrained")
    top, mid, bot = fig.subfigures(3, 1, height_ratios=[1.15, 1, 1])
    fig2a, fig8 = ("Fig. 2(a): ", "") if figure == "2a" else ("", "Fig. 8: ")
    top.suptitle(f"{fig2a}Theorem 3's per-parameter bound (it needs B << pi sigma_i^2/(2 mu_i^2) for every i)",
                 fontsize=10)
    axes = top.subplots(1, len(points), squeeze=False)[0]
    for ax, p in zip(axes, points):
        s = p.stats
        r = s["_ratio"]
        r = np.log10(r[np.isfinite(r) & (r > 0)])
        ax.hist(r, bins=80, color="0.6")
        ax.set_yscale("log")
        for key, label, color in MARKS:
            v = s["ratio"][key]
            if v is not None and v > 0:
                ax.axvline(math.log10(v), color=color, lw=1.4, label=f"{label}: {v:.3g}")
        ax.axvline(math.log10(b), color="k", ls=":", lw=1.4, label=f"trained B = {b}")
        ax.axvline(math.log10(s["noise_floor"]), color="tab:purple", ls="--", lw=1.2,
                   label=f"pi N/2 = {s['noise_floor']:.3g}\n(a zero mean lands here)")
        h = s.get("hessian")
        b14 = h["b_noise"]["value"] if h else None
        if b14 is not None and b14 > 0:
            ax.axvline(math.log10(b14), color="tab:blue", ls="-.", lw=1.4, label=f"Eq 14 B_noise = {b14:.3g}")
        ax.set_xlabel(r"$\log_{10}\ \pi\sigma_i^2 / (2\mu_i^2)$")
        ax.set_ylabel("parameters")
        ax.set_title(f"step {p.step}: loss {p.sample_loss:.3f}, {s['n_params']} params, N = {s['n_examples']}, "
                     f"{s['n_dead']} with no gradient\n" + hessian_lines(s), fontsize=9)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    mid.suptitle(f"{fig8}per-example gradient of chosen coordinates at step {points[-1].step}, with the fitted "
                 f"Gaussian", fontsize=10)
    bot.suptitle(f"the same coordinates: means of B = {b} examples (a minibatch gradient, Theorem 2's G_est,i)",
                 fontsize=10)
    for ax, c in zip(mid.subplots(1, len(coords), squeeze=False)[0], coords):
        part = f"{c['group']}: " if "group" in c else ""  # the MoE part the coordinate was drawn from
        _gauss_panel(ax, c["_values"], c["normality"],
                     f"{short(c['name'])}\n({part}{c['kind']})\nmu {c['mu']:.2g}, sigma {c['sigma']:.2g}, "
                     f"ratio {_fmt(c['ratio'])}", "per-example gradient")
    for ax, c in zip(bot.subplots(1, len(coords), squeeze=False)[0], coords):
        if c.get("normality_batch_mean"):
            _gauss_panel(ax, c["_batch_means"], c["normality_batch_mean"], short(c["name"]), f"mean of {b} examples")
        else:
            ax.set_axis_off()
    fig.suptitle(f"{cfg.task.name} / {cfg.model.name} / {cfg.optimizer.name}, B = {int(cfg.batch)} "
                 f"{cfg.task.get('batch_unit', 'examples')}, lr = {cfg.optimizer.lr:g}, "
                 f"seed {cfg.seed}; N = {examples} training examples", fontsize=11)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def payload(points: list, cfg, command: str, seconds: float, hessian_probes: int = 0,
            hessian_groups: int = 0, figure: str = "2a") -> dict:
    def clean(d: dict) -> dict:
        return {k: v for k, v in d.items() if not k.startswith("_")}

    item = GRADIENTS[figure]
    return {
        "figure": f"{item.output}.png", "paper_item": item.label, "command": command, "wall_s": round(seconds, 2),
        "point": {"task": cfg.task.name, "model": cfg.model.name, "optimizer": cfg.optimizer.name,
                  "batch": int(cfg.batch), "batch_unit": str(cfg.task.get("batch_unit", "examples")),
                  "batch_examples": points[-1].stats["batch_examples"], "lr": float(cfg.optimizer.lr),
                  "seed": int(cfg.seed)},
        "hessian_probes": hessian_probes, "hessian_groups": hessian_groups,
        "notes": ["ratio: plug-in pi sigma^2/(2 mu_hat^2); ratio_corrected uses mu_hat^2 - sigma^2/N (inf where <= 0)",
                  "noise_floor = pi N/2: the plug-in ratio of a coordinate whose true mean is 0",
                  "b_simple: tr(Sigma)/(|mu_hat|^2 - tr(Sigma)/N), unbiased; b_simple_plugin: tr(Sigma)/|mu_hat|^2",
                  "normality: per-example values; *_at_batch: its CLT scaling to a mean of B examples",
                  ("normality_batch_mean: measured on 4096 means of B examples drawn without replacement from the N "
                   "(resampled from N, so the draws overlap: its KS 5% value is only a guide)"),
                  ("hessian (null if --hessian-probes 0): b_noise = Eq 14 with products of means from different "
                   "example groups (unbiased in mu), b_noise_plugin = Eq 14 with mu_hat; eps_max = Eq 16; "
                   "eps_max_sgd, b_noise_sgd = Eq 1 (full Sigma), b_noise_sgd_diag = Eq 1 with diagonal Sigma"),
                  ("each {value, lo, hi}: Fieller ~95% interval over Hutchinson probes and example groups, null "
                   "ends unbounded; rse_probes, rse_data: relative standard errors from each; "
                   "terms: the sums they are built from (surge_repro/run/diagnostics.py docstring)")],
        "checkpoints": [{"step": p.step, "train_loss": p.train_loss, "sample_loss": p.sample_loss,
                         **clean({**p.stats, "coordinates": [clean(c) for c in p.stats["coordinates"]]})}
                        for p in points],
    }


def main(argv: list[str] | None = None) -> int:
    figure = argparse.ArgumentParser(add_help=False)
    figure.add_argument("--figure", choices=sorted(GRADIENTS), default="2a",
                        help="the paper item: 2a (the CNN) or 8 (the MoE); sets the point and the defaults below")
    item = GRADIENTS[figure.parse_known_args(argv)[0].figure]
    epilog = "; ".join(f"{g.label}: {g.command} (data: prepare task={g.data})" + (f", {g.status}" if g.status else "")
                       for g in GRADIENTS.values())
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[figure], epilog=epilog,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value (Hydra syntax)")
    ap.add_argument("--steps", help="checkpoint steps, comma separated (0: the initial weights)")
    ap.add_argument("--examples", type=int, help="training examples per checkpoint (N)")
    ap.add_argument("--chunk", type=int, help="examples per vmap call or per loop (bounds memory)")
    ap.add_argument("--top", type=int, help="Fig. 8 coordinates with the largest |mu| (per MoE part in an MoE)")
    ap.add_argument("--random", type=int, help="Fig. 8 coordinates drawn at random (per MoE part in an MoE)")
    ap.add_argument("--sample-seed", type=int, default=12345, help="draws the N examples")
    ap.add_argument("--hessian-probes", type=int,
                    help="Hutchinson probes for Eq 14 / 16 / 1 (HVPs: this + 2 x groups); 0 skips the Hessian part")
    ap.add_argument("--hessian-groups", type=int, default=8,
                    help="example groups for the unbiased products of means and the sampling error (>= 3)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default reports/figures)")
    ap.set_defaults(**dict(item.options))  # strings: argparse converts them by each option's type
    args = ap.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        ap.error(f"overrides must be key=value, got {bad}")
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--steps must be integers separated by commas, got {args.steps!r}")
    cfg = compose(overrides_with_defaults(args.overrides, item.figure))
    command = " ".join(["python reports/fig2a_fig8_gradients.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    points = diagnostics.run(cfg, steps, args.examples, args.chunk, args.sample_seed, args.top, args.random,
                             hessian_probes=args.hessian_probes, hessian_groups=args.hessian_groups)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{item.output}.png"
    draw(points, cfg, png, args.examples, item.figure)
    data = payload(points, cfg, command, seconds, args.hessian_probes, args.hessian_groups, item.figure)
    png.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"{seconds:.1f} s\nfigure: {png}\nnumbers: {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
