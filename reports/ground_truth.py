"""The ground truth: what the pipeline recovers on the noisy quadratic against what the theory says it must.

Reads ``store/ground_truth_sign`` (Adam (0, 0) = sign descent) and ``store/ground_truth_sgd`` (SGD), fits them as every
report does (``surge_repro.analysis.fit``), and draws one panel per experiment: the optimal LR per batch size with its
95% bootstrap interval, the exact truth (Eq 9 for sign descent, Eq 1 for SGD, ``surge_repro.analysis.ground_truth``),
the paper's law at the true parameters (Eq 2 with Eq 14's B_noise and Eq 16's eps_max) and the law fitted to the optima.
For ``store/ground_truth_eq22`` (SGD trained to a target on the isotropic quadratic) the panel is Eq 22's: 1/S
against 1/E at each batch size's fewest-steps LR, measured and exact (``ground_truth.eq22_truth``), Eq 22's line
fitted to each, and McCandlish's small-step line at his B_noise = noise^2. It also draws each experiment's standard
figure (heatmap, fitted numbers) as ``reports/<script>.py`` do. With fewer seeds than an interval needs
(``fit.MIN_SEEDS``) the intervals are left out and the panel and the JSON say so; a fitted
number on or outside its own interval is starred (*) and its note is in the JSON.

    python run.py -m +experiment=ground_truth_sign
    python run.py -m +experiment=ground_truth_sgd
    python run.py -m +experiment=ground_truth_eq22
    python reports/ground_truth.py        # reports/figures/ground_truth.png and .json, and the standard figures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from surge_repro.analysis import ground_truth as closed_forms  # noqa: E402
from surge_repro.analysis.fit import fit_experiment  # noqa: E402
from surge_repro.analysis.identify import surge_verdict  # noqa: E402
from surge_repro.analysis.theory import adam_lr, sgd_lr  # noqa: E402
from surge_repro.config import overrides_help, print_cfg, shell_completion, without_flags  # noqa: E402
from surge_repro.report import (
    figures,  # noqa: E402
    render,
)
from surge_repro.report.plots import fmt_ci  # noqa: E402
from surge_repro.store import load_grid, one_grid  # noqa: E402

EXPERIMENTS = {"ground_truth_sign": "adam", "ground_truth_sgd": "sgd_alpha1",  # experiment -> the law it must obey
               "ground_truth_eq22": "eq22"}


def compare(cfg, law: str, n_boot: int) -> dict | None:
    """The fit of one ground-truth experiment beside the truth of its task; None without data."""
    table = one_grid(load_grid(cfg.paths.store, cfg.experiment_name), list(cfg.report.get("select") or []),
                     where=f"{cfg.paths.store}/{cfg.experiment_name}")
    if table.empty:
        return None
    if law == "eq22":
        return compare_eq22(cfg, table, n_boot)
    fit = fit_experiment(table, n_boot=n_boot)[0]
    t = cfg.task
    truth = closed_forms.ray_truth(int(t.dim), float(t.rho), float(t.noise))
    scale = float(cfg.model.init)  # on the ray at theta = init 1, every LR scales with init
    sign = law == "adam"
    true_b, true_eps = ((truth["b_noise"], truth["eps_max"] * scale) if sign
                        else (truth["sgd_b_noise"], truth["sgd_eps_max"] * scale))
    exact = closed_forms.sign_lr if sign else closed_forms.sgd_lr
    b = np.array(fit.batch_sizes)
    return {"experiment": cfg.experiment_name, "law": law, "fit": fit, "n_runs": fit.n_runs, "n_seeds": fit.n_seeds,
            "batch_sizes": b, "lr_opt": np.array(fit.lr_opt), "lr_opt_ci": np.array(fit.lr_opt_ci),
            "lr_true": exact(b, int(t.dim), float(t.rho), float(t.noise)) * scale,
            "exact": lambda x: exact(x, int(t.dim), float(t.rho), float(t.noise)) * scale,
            "true_b_noise": true_b, "true_eps_max": true_eps, "truth": truth,
            "fitted": fit.curve[law], "peak": fit.peak_batch_size}


def compare_eq22(cfg, table, n_boot: int) -> dict:
    """Eq 22 fitted to the fewest-steps optima of the runs beside the closed form's (``eq22_truth``)."""
    fit = fit_experiment(table, n_boot=n_boot, criterion="steps")[0]
    loss0 = 0.5 * int(cfg.task.dim) * float(cfg.model.init) ** 2  # H = I: the loss at theta = init
    ratio = loss0 / fit.target
    truth = closed_forms.eq22_truth(fit.batch_sizes, fit.lrs, float(cfg.task.noise), ratio)
    return {"experiment": cfg.experiment_name, "law": "eq22", "fit": fit, "n_runs": fit.n_runs, "n_seeds": fit.n_seeds,
            "truth": truth, "ratio": ratio, "batch_sizes": np.array(fit.batch_sizes),
            "steps": np.array(fit.steps_at_opt), "true_b_noise": truth["b_noise"],
            "fitted": {"b_noise": fit.b_noise, "b_noise_ci": fit.b_noise_ci, "s_min": fit.s_min,
                       "s_min_ci": fit.s_min_ci}}


def panel_eq22(ax, c: dict) -> None:
    t, fit, b = c["truth"], c["fit"], c["batch_sizes"]
    inv_e = 1 / (b * c["steps"])
    xs = np.linspace(0, inv_e.max() * 1.1, 200)
    bb = np.geomspace(b.min() / 4, b.max() * 4, 300)
    s_star = np.log(c["ratio"]) / np.log1p(bb / t["mccandlish_b_noise"])
    ax.plot(1 / (bb * s_star), 1 / s_star, color="black", lw=2.2, label="truth: S = log R / log(1 + B / noise^2)")
    ax.plot(1 / t["examples"], 1 / t["steps"], "s", color="black", mfc="none", ms=10,
            label="truth on the LR lattice (ceil)")
    ax.plot(xs, 1 / t["s_min"] - t["b_noise"] * xs, color="0.5", ls="--", lw=1.4,
            label=f"Eq 22 fitted to the truth: B_noise = {t['b_noise']:.3g}, S_min = {t['s_min']:.3g}")
    off = fit.off_interval
    b_noise = fmt_ci(fit.b_noise, fit.b_noise_ci, star="b_noise" in off)
    ax.plot(xs, 1 / fit.s_min - fit.b_noise * xs, color="tab:orange", ls=":", lw=2.2,
            label=f"Eq 22 fitted to the runs: B_noise = {b_noise}")
    ax.plot(inv_e, 1 / c["steps"], "o", color="tab:red", mec="white", ms=8, zorder=5,
            label=f"measured at each B's fewest-steps LR ({c['n_seeds']} seeds), B = {', '.join(f'{x:g}' for x in b)}")
    mc = t["mccandlish_b_noise"]
    ax.plot(xs, 1 / np.log(c["ratio"]) - mc * xs, color="tab:blue", lw=1, ls="-.",
            label=f"McCandlish's small-step line: B_noise = noise^2 = {mc:.3g}, S_min = log R")
    ax.set_xlim(0, xs.max())
    ax.set_ylim(0, 1.15 / c["steps"].min())
    ax.set_xlabel("1 / E (1 / examples to the target)")
    ax.set_ylabel("1 / S (1 / steps to the target)")
    err = 100 * (fit.b_noise / c["true_b_noise"] - 1)
    ax.set_title(f"{c['experiment']}: {c['n_runs']} runs; Eq 22's B_noise recovered {err:+.1f}% from the closed form's"
                 f"\n(the closed form's Eq 22 is {t['b_noise'] / mc:.2f} x McCandlish's B_noise: one step can take "
                 f"all the loss here)", fontsize=10)
    ax.legend(fontsize=7.5, loc="lower left")


def summary_eq22(c: dict) -> dict:
    t, fit = c["truth"], c["fit"]
    return {"experiment": c["experiment"], "law": "eq22", "runs": c["n_runs"], "seeds": c["n_seeds"],
            "target": fit.target, "log_ratio": float(np.log(c["ratio"])), "batch_sizes": c["batch_sizes"],
            "lr_opt": fit.lr_opt, "lr_true": t["lr_opt"], "steps": c["steps"], "steps_true": t["steps"],
            "true_b_noise": t["b_noise"], "true_s_min": t["s_min"], "fitted_b_noise": fit.b_noise,
            "fitted_b_noise_ci": fit.b_noise_ci, "fitted_s_min": fit.s_min, "fitted_s_min_ci": fit.s_min_ci,
            "b_noise_error": fit.b_noise / t["b_noise"] - 1, "mccandlish_b_noise": t["mccandlish_b_noise"],
            "eq1_b_noise": fit.curve["sgd_alpha1"]["b_noise"], "b_simple": fit.b_simple, "b_simple_ci": fit.b_simple_ci,
            "interval": fit.interval, "notes": fit.notes}


def panel(ax, c: dict) -> None:
    if c["law"] == "eq22":
        return panel_eq22(ax, c)
    b, fitted = c["batch_sizes"], c["fitted"]
    xs = np.geomspace(b.min() / 1.5, b.max() * 1.5, 300)
    law = adam_lr if c["law"] == "adam" else sgd_lr
    name = "Eq 2" if c["law"] == "adam" else "Eq 1"
    exact = "Eq 9, exact (erf)" if c["law"] == "adam" else "Eq 1, exact here"
    ax.plot(xs, c["exact"](xs), color="black", lw=2.2, label=f"truth: {exact}")
    if c["law"] == "adam":
        ax.plot(xs, law(xs, c["true_eps_max"], c["true_b_noise"]), color="0.5", ls="--", lw=1.4,
                label=f"Eq 2 at Eq 14's B_noise = {c['true_b_noise']:.3g}, Eq 16's eps_max = {c['true_eps_max']:.4g}")
    off, key = c["fit"].off_interval, f"curve/{c['law']}"
    b_noise = fmt_ci(fitted["b_noise"], fitted["b_noise_ci"], star=f"{key}/b_noise" in off)
    eps_max = fmt_ci(fitted["eps_max"], fitted["eps_max_ci"], ".4g", f"{key}/eps_max" in off)
    ax.plot(xs, law(xs, fitted["eps_max"], fitted["b_noise"]), color="tab:orange", ls=":", lw=2.2,
            label=f"{name} fitted to the optima: B_noise = {b_noise}, eps_max = {eps_max}")
    lo, hi = c["lr_opt_ci"].T
    enough = c["fit"].interval["enough_seeds"]
    yerr = np.nan_to_num([c["lr_opt"] - lo, hi - c["lr_opt"]]) if enough else None
    ax.errorbar(b, c["lr_opt"], yerr=yerr, fmt="o", color="tab:red", mec="white", ms=8, capsize=3, zorder=5,
                label=f"optimal LR measured ({c['n_seeds']} seeds, " + ("95% interval)" if enough else
                                                                         "too few seeds for an interval)"))
    ax.axvline(c["true_b_noise"], color="black", lw=0.8, ls="--")
    ax.axvline(fitted["b_noise"], color="tab:orange", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B (examples)")
    ax.set_ylabel("learning rate")
    err = 100 * (fitted["b_noise"] / c["true_b_noise"] - 1)
    ax.set_title(f"{c['experiment']}: {c['n_runs']} runs; B_noise recovered {err:+.1f}% from the truth"
                 + ("\n* on or outside its own bootstrap interval: the interval is the replicates' spread"
                    if any(k.startswith(key) for k in off) else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower center")


def summary(c: dict) -> dict:
    if c["law"] == "eq22":
        return summary_eq22(c)
    return {"experiment": c["experiment"], "law": c["law"], "runs": c["n_runs"], "seeds": c["n_seeds"],
            "true_b_noise": c["true_b_noise"], "true_eps_max": c["true_eps_max"],
            "fitted_b_noise": c["fitted"]["b_noise"], "fitted_b_noise_ci": c["fitted"]["b_noise_ci"],
            "fitted_eps_max": c["fitted"]["eps_max"], "fitted_eps_max_ci": c["fitted"]["eps_max_ci"],
            "b_noise_error": c["fitted"]["b_noise"] / c["true_b_noise"] - 1,
            "observed_peak_batch_size": c["peak"], "exact_peak_batch_size": c["truth"]["eq9_peak_batch_size"]
            if c["law"] == "adam" else None,
            "batch_sizes": c["batch_sizes"], "lr_opt": c["lr_opt"], "lr_opt_ci": c["lr_opt_ci"],
            "lr_true": c["lr_true"], "lr_opt_over_true": c["lr_opt"] / c["lr_true"],
            "verdict": surge_verdict(c["fit"])["verdict"], "interval": c["fit"].interval, "notes": c["fit"].notes}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if overrides_help(argv, "python reports/ground_truth.py", __doc__) or shell_completion(argv, __file__):
        return 0
    if "--cfg" in argv:
        return not all(print_cfg(argv, render.compose_for(e, without_flags(argv))) for e in EXPERIMENTS)
    command = " ".join(["python reports/ground_truth.py", *argv])
    found = []
    for experiment, law in EXPERIMENTS.items():
        cfg = render.compose_for(experiment, argv)
        c = compare(cfg, law, int(cfg.report.n_boot))
        if c is None:
            print(f"{experiment}: no finished runs in {cfg.paths.store}. "
                  f"Run: python run.py -m +experiment={experiment}")
            continue
        render.render(cfg, figures.TITLES["ground_truth.py"], command)
        found.append(c)
        fitted = c["fitted"]
        if law == "eq22":
            print(f"{experiment}: Eq 22's B_noise {fmt_ci(fitted['b_noise'], fitted['b_noise_ci'], '.4g')} against "
                  f"the closed form's {c['true_b_noise']:.4g} (McCandlish's {c['truth']['mccandlish_b_noise']:.4g})")
            continue
        print(f"{experiment}: B_noise {fmt_ci(fitted['b_noise'], fitted['b_noise_ci'], '.4g')} against the true "
              f"{c['true_b_noise']:.4g}; eps_max {fmt_ci(fitted['eps_max'], fitted['eps_max_ci'], '.4g')} against "
              f"{c['true_eps_max']:.4g} ({c['fit'].interval['note']})")
    if not found:
        return 1
    out = Path(render.compose_for(next(iter(EXPERIMENTS)), argv).paths.figures)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(found), figsize=(7.5 * len(found), 6), layout="constrained", squeeze=False)
    for ax, c in zip(axes[0], found):
        panel(ax, c)
    fig.suptitle("Ground truth: what the pipeline finds on noisy quadratics against the closed forms\n(the optimal "
                 "LR one step from a known state; Eq 22 from runs trained to a target)", fontsize=11)
    png = out / "ground_truth.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    payload = {"figure": png.name, "command": command, "experiments": [summary(c) for c in found]}
    png.with_suffix(".json").write_text(json.dumps(render.plain(payload), indent=1))
    print(f"wrote {png} and {png.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
