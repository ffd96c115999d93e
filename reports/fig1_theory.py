"""Fig. 1: the optimal LR against batch size in theory, SGD (Eq 1) against sign descent / Adam (Eq 2 and Eq 9).

Two panels:

- (a) the laws as the paper draws them, normalised: eps_opt / eps_max against B / B_noise for SGD (Eq 1), McCandlish's
  Adam guess (Eq 24, alpha = 0.5) and the surge (Eq 2), which peaks at B = B_noise (Eq 15);
- (b) the exact Eq 9 (E[sign] by erf, Eq 10) for one set of per-coordinate (mu_i, sigma_i) and a Hessian H, with
  its small-batch form Eq 2 (B_noise of Eq 14, eps_max of Eq 16), Theorem 3's regime bound min_i pi sigma_i^2 /
  (2 mu_i^2), and Theorem 4's large-batch limit (Eq 17): the whole rise, fall and rise again that the paper's Fig. 1
  sketches (its asymptotic tail omitted). ``--su`` adds Su's mean-field variant (``theory.su_lr``; J. Su, https://spaces.ac.cn/archives/10542).

The default problem (``default_problem``) has 90 coordinates in two groups: 30 coupled, fairly clean coordinates
(mu = 1, sigma = 10, H_ii = 1, H_ij = 0.5 inside the group) that make the surge, and 60 uncoupled, very noisy,
flat ones (mu = 0.3, sigma = 300, H_ii = 0.01) whose sign only becomes informative at large B and lifts the curve
again. A diagonal H would give no surge at all (Eq 14's B_noise is infinite without off-diagonal terms), and
identical coordinates give a rise and a fall with no second rise; the numbers are illustrative, not measured.
``--params FILE.json`` takes {"mu": [...], "sigma": [...], "h": [[...]] or a diagonal [...]} instead.

    python reports/fig1_theory.py                    # reports/figures/fig1_theory.png and .json
    python reports/fig1_theory.py --su               # with Su's mean-field curve (kappa^2 = B_simple by default)
    python reports/fig1_theory.py --su --kappa2 100 --params my_problem.json --out /tmp/fig

Needs no store; ``reports/index.py`` draws it every time. The JSON holds the problem's description, the derived
numbers (B_noise, eps_max, the bound, the exact curve's peak, trough and limit) and, with ``--su``, Su's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from surge_repro.analysis import theory  # noqa: E402
from surge_repro.report.plots import fmt_b  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "reports" / "figures"


def default_problem() -> dict:
    """The illustrative (mu, sigma, H) described in the module docstring, with its description for the JSON."""
    n_a, n_b = 30, 60
    mu = np.r_[np.ones(n_a), 0.3 * np.ones(n_b)]
    sigma = np.r_[10.0 * np.ones(n_a), 300.0 * np.ones(n_b)]
    h = np.zeros((n_a + n_b, n_a + n_b))
    h[:n_a, :n_a] = 0.5
    np.fill_diagonal(h, np.r_[np.ones(n_a), 0.01 * np.ones(n_b)])
    groups = [{"n": n_a, "mu": 1.0, "sigma": 10.0, "h_ii": 1.0, "h_ij_within": 0.5},
              {"n": n_b, "mu": 0.3, "sigma": 300.0, "h_ii": 0.01, "h_ij_within": 0.0}]
    return {"mu": mu, "sigma": sigma, "h": h, "source": "default_problem (illustrative, two groups, no coupling "
                                                         "between them)", "groups": groups}


def load_problem(path: str | Path) -> dict:
    raw = json.loads(Path(path).read_text())
    missing = [k for k in ("mu", "sigma", "h") if k not in raw]
    if missing:
        raise SystemExit(f"{path}: missing {missing}; give {{\"mu\": [...], \"sigma\": [...], \"h\": [[...]] or its "
                         f"diagonal [...]}}")
    return {"mu": np.asarray(raw["mu"], float), "sigma": np.asarray(raw["sigma"], float),
            "h": np.asarray(raw["h"], float), "source": str(path)}


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


def compute(problem: dict, su: bool = False, kappa2: float | None = None) -> dict:
    """Every derived number and the sampled curves of panel (b)."""
    mu, sigma, h = problem["mu"], problem["sigma"], problem["h"]
    p = theory.surge_parameters(mu, sigma, h)
    limit = theory.sign_lr_limit(mu, h)
    bound = p["theorem3_bound"]
    # from far below the smallest regime bound to far above the largest one, so both limits show
    with np.errstate(divide="ignore"):
        top = float(np.max(np.pi * np.asarray(sigma) ** 2 / (2 * np.asarray(mu) ** 2)))
    b = np.geomspace(min(0.1, bound / 1e3), max(1e3 * top, 1e4), 1200)
    exact = theory.sign_lr(b, mu, sigma, h)
    ext = theory.curve_extrema(b, exact)
    peak = trough = None
    if ext["maxima"]:
        i = int(np.searchsorted(b, ext["maxima"][0][0]))
        pb, pv = theory.refine_peak(lambda x: theory.sign_lr(x, mu, sigma, h), b[i - 1], b[i + 1])
        peak = {"batch_size": pb, "lr": pv}
    if ext["minima"]:
        i = int(np.searchsorted(b, ext["minima"][0][0]))
        tb, tv = theory.refine_peak(lambda x: -theory.sign_lr(x, mu, sigma, h), b[i - 1], b[i + 1])
        trough = {"batch_size": tb, "lr": -tv}
    out = {
        "n_coordinates": int(len(mu)),
        "eq14_b_noise": _finite(p["b_noise"]), "eq16_eps_max": _finite(p["eps_max"]),
        "eq14_applies": bool(math.isfinite(p["b_noise"])),
        "offdiag_sum": p["offdiag_sum"], "trace_h": p["trace_h"],
        "theorem3_bound_min": bound, "theorem3_bound_max": top,
        "exact_peak": peak, "exact_trough": trough,
        "exact_shape": ("rise, fall, rise" if peak and trough else "rise, fall" if peak else "monotone"),
        "eq17_limit": limit, "exact_at_largest_b": {"batch_size": float(b[-1]), "lr": float(exact[-1])},
        "limit_over_peak": limit / peak["lr"] if peak else None,
        "peak_over_eq14_b_noise": peak["batch_size"] / p["b_noise"] if peak and math.isfinite(p["b_noise"]) else None,
        "_b": b, "_exact": exact, "_approx": theory.sign_lr(b, mu, sigma, h, approx=True),
    }
    if math.isfinite(p["b_noise"]):
        out["_eq2"] = theory.adam_lr(b, p["eps_max"], p["b_noise"])
    if su:
        k2 = theory.su_kappa2(mu, sigma) if kappa2 is None else float(kappa2)
        sp = theory.su_parameters(mu, h, k2)
        out["su"] = {**{k: _finite(v) if isinstance(v, float) else v for k, v in sp.items()},
                     "kappa2_source": "B_simple = sum sigma^2 / sum mu^2" if kappa2 is None else "--kappa2"}
        out["_su"] = theory.su_lr(b, mu, h, k2)
    return out


def figure(d: dict, su: bool, problem_name: str = "illustrative") -> plt.Figure:
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(14, 6.6), layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 1.35]})
    # (a) the laws, normalised
    x = np.geomspace(1e-3, 1e3, 400)
    ax_a.plot(x, theory.sgd_lr(x, 1.0, 1.0), color="tab:blue", lw=2, label="SGD (Eq 1): 1 / (1 + B_noise/B)")
    ax_a.plot(x, theory.alpha_lr(x, 1.0, 1.0, 0.5), color="magenta", lw=1.5, ls=":",
              label="McCandlish's Adam guess (Eq 24, alpha = 0.5)")
    ax_a.plot(x, theory.adam_lr(x, 1.0, 1.0), color="tab:orange", lw=2.2, ls="--",
              label="Adam / sign surge (Eq 2): 2 sqrt(x) / (1 + x)")
    ax_a.axvline(1.0, color="red", ls="--", lw=1.2, label="B = B_noise: the surge's peak (Eq 15)")
    ax_a.set_xscale("log")
    ax_a.set_ylim(0, 1.08)
    ax_a.set_xlabel("B / B_noise")
    ax_a.set_ylabel("optimal LR / eps_max")
    ax_a.set_title("(a) the laws, normalised (each with its own eps_max and B_noise)", fontsize=10)
    ax_a.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax_a.grid(alpha=0.3, which="both", lw=0.4)

    # (b) the exact Eq 9 for one problem
    b = d["_b"]
    ax_b.plot(b, d["_exact"], color="tab:orange", lw=2.4, label="exact Eq 9, E[sign] = erf (Eq 10)", zorder=5)
    ax_b.plot(b, d["_approx"], color="0.35", lw=1.1, ls="-.", label="Eq 9 with Eq 10's approximation of erf")
    if "_eq2" in d:
        ax_b.plot(b, d["_eq2"], color="tab:orange", lw=1.6, ls="--",
                  label=f"Eq 2 (Theorem 3): eps_max = {d['eq16_eps_max']:.3g} (Eq 16)")
        ax_b.axvline(d["eq14_b_noise"], color="red", ls="--", lw=1.2,
                     label=f"B_noise (Eq 14) = {fmt_b(d['eq14_b_noise'], 4)}")
    ax_b.axhline(d["eq17_limit"], color="black", ls=":", lw=1.5,
                 label=f"Eq 17 limit (Theorem 4) = {d['eq17_limit']:.3g}")
    lo, hi = d["theorem3_bound_min"], d["theorem3_bound_max"]
    ax_b.axvspan(lo, hi, color="0.5", alpha=0.12, lw=0,
                 label=f"pi sigma_i^2 / (2 mu_i^2) from {fmt_b(lo)} to {fmt_b(hi)}:\n"
                       "Theorem 3 holds left of it, Theorem 4 right of it")
    if su:
        s = d["su"]
        where = f"peak at B = {fmt_b(s['b_peak'])}" if s["surge"] else "no surge (beta_noise >= 1)"
        ax_b.plot(b, d["_su"], color="tab:green", lw=1.6,
                  label=f"Su's mean field, kappa^2 = {fmt_b(s['kappa2'])}: {where}")
    for key, marker, name in (("exact_peak", "^", "peak"), ("exact_trough", "v", "trough")):
        pt = d[key]
        if pt:
            ax_b.plot(pt["batch_size"], pt["lr"], marker, color="tab:red", ms=9, zorder=6)
            ax_b.annotate(f"{name}: B = {fmt_b(pt['batch_size'], 4)}, LR = {pt['lr']:.3g}",
                          (pt["batch_size"], pt["lr"]), textcoords="offset points",
                          xytext=(8, 8 if name == "peak" else -14), fontsize=8.5, color="tab:red")
    top = max(np.nanmax(d["_exact"]), d["eq17_limit"], np.nanmax(d["_su"]) if su else 0)
    ax_b.set_ylim(0, 1.25 * top)
    ax_b.set_xscale("log")
    ax_b.set_xlim(b[0], b[-1])
    ax_b.set_xlabel("batch size B (examples)")
    ax_b.set_ylabel("optimal LR of sign descent")
    ax_b.set_title(f"(b) Eq 9 for {d['n_coordinates']} coordinates (mu_i, sigma_i, H; {problem_name}): "
                  f"{d['exact_shape']}",
                   fontsize=10)
    ax_b.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax_b.grid(alpha=0.3, which="both", lw=0.4)
    fig.suptitle("Fig. 1: optimal learning rate against batch size, SGD against Adam (sign descent)", fontsize=12)
    return fig


def render(out_dir: str | Path = DEFAULT_OUT, su: bool = False, kappa2: float | None = None,
           params: str | Path | None = None, command: str | None = None) -> Path:
    """Draw Fig. 1 into ``out_dir``/fig1_theory.png with its JSON beside it; returns the PNG path."""
    problem = load_problem(params) if params else default_problem()
    d = compute(problem, su, kappa2)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "fig1_theory.png"
    fig = figure(d, su, "from " + Path(params).name if params else "illustrative")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    numbers = {k: v for k, v in d.items() if not k.startswith("_")}
    desc = {"source": problem["source"], "groups": problem.get("groups"),
            "h_is_diagonal": bool(np.count_nonzero(problem["h"] - np.diag(np.diag(problem["h"]))) == 0)
            if np.ndim(problem["h"]) == 2 else True}
    if params:
        desc.update(mu=problem["mu"].tolist(), sigma=problem["sigma"].tolist(), h=problem["h"].tolist())
    notes = []
    if not d["eq14_applies"]:
        notes.append("Eq 14 does not apply: the off-diagonal sum sum_{i!=j} (mu_i mu_j / sigma_i sigma_j) H_ij is "
                     "not > 0 (a diagonal H, for one), so Eq 2 has no peak")
    elif d["eq14_b_noise"] > d["theorem3_bound_min"] / 3:
        notes.append("B_noise (Eq 14) is not well below Theorem 3's bound: Eq 2 is a poor description of the peak")
    payload = {"figure": png.name, "command": command, "problem": desc, "numbers": numbers, "notes": notes,
               "summary": summary(d)}
    png.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    return png


def summary(d: dict) -> list[str]:
    """The derived numbers in words (printed, in the JSON and on the index page)."""
    lines = []
    if d["eq14_applies"]:
        lines.append(f"Theorem 3: B_noise (Eq 14) = {d['eq14_b_noise']:.4g}, eps_max (Eq 16) = {d['eq16_eps_max']:.4g}"
                     f"; regime bound min_i pi sigma_i^2/(2 mu_i^2) = {d['theorem3_bound_min']:.4g}")
    else:
        lines.append("Theorem 3: no B_noise (Eq 14 needs a positive off-diagonal sum); no surge in its regime")
    if d["exact_peak"]:
        p = d["exact_peak"]
        lines.append(f"exact Eq 9: peak at B = {p['batch_size']:.4g} (LR {p['lr']:.4g})" +
                     (f", {d['peak_over_eq14_b_noise']:.3f} x Eq 14's B_noise" if d["peak_over_eq14_b_noise"] else ""))
    if d["exact_trough"]:
        t = d["exact_trough"]
        lines.append(f"exact Eq 9: trough at B = {t['batch_size']:.4g} (LR {t['lr']:.4g}), then it rises again")
    lines.append(f"Theorem 4: limit (Eq 17) = {d['eq17_limit']:.4g}; exact Eq 9 at B = "
                 f"{d['exact_at_largest_b']['batch_size']:.3g} is {d['exact_at_largest_b']['lr']:.4g}"
                 + (f"; limit / peak = {d['limit_over_peak']:.3f}" if d["limit_over_peak"] else ""))
    if "su" in d:
        s = d["su"]
        lines.append(f"Su's mean field (kappa^2 = {s['kappa2']:.4g}, {s['kappa2_source']}): beta_noise = "
                     f"{s['beta_noise']:.4g}, " + (f"peak at B = {s['b_peak']:.4g}, eta_max = {s['eta_max']:.4g}, "
                                                  f"S-E balance at B_noise-2 = {s['b_noise_2']:.4g}"
                                                  if s["surge"] else "no surge (beta_noise >= 1)"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--su", action="store_true", help="add Su's mean-field variant")
    ap.add_argument("--kappa2", type=float, default=None,
                    help="Su's kappa^2 (default: B_simple = sum sigma^2 / sum mu^2)")
    ap.add_argument("--params", default=None, help='JSON with "mu", "sigma", "h" (matrix or diagonal)')
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default reports/figures)")
    args = ap.parse_args(argv)
    if args.kappa2 is not None and not args.kappa2 > 0:
        ap.error("--kappa2 must be > 0")
    command = " ".join(["python reports/fig1_theory.py", *(sys.argv[1:] if argv is None else argv)])
    png = render(args.out, args.su, args.kappa2, args.params, command)
    for line in json.loads(png.with_suffix(".json").read_text())["summary"]:
        print(line)
    print(f"figure: {png}\nnumbers: {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
