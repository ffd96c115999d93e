"""The registry of figures: paper item -> experiment -> report script, in this one place.

Each report script in ``reports/`` looks itself up here (``by_script``) for its title and the experiments it draws by
default; ``reports/index.py`` walks ``ITEMS`` to rebuild every figure whose experiment has data and to write the
status table (``sweep_status``: done / partial k of N / not run). An item's experiment is
``conf/experiment/<experiment>.yaml`` and ``store/<experiment>/``.

    python reports/fig3_resnet18_tinyimagenet.py     # one figure
    python reports/index.py                          # every figure with data, and reports/figures/index.html

Fig. 2(a) and Fig. 8 come from one point's per-example gradients, not from a grid: ``GRADIENTS`` holds them (the
CNN's and the MoE's), drawn by ``reports/fig2a_fig8_gradients.py --figure 2a`` and ``--figure 8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from surge_repro.config import CONF_DIR, compose

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@dataclass(frozen=True)
class Item:
    """One row of the table: a paper item (or one of the suite's own grids) and the experiment that reproduces it."""

    label: str  # "Fig. 3", or the suite's name for a grid the paper does not have
    experiment: str
    script: str  # file name in reports/
    shows: str
    default: bool = True  # drawn by its script without arguments; otherwise the script needs +experiment=
    paper_targets: tuple[float, ...] = field(default=())  # the paper's target losses, where it gives them
    store: bool = True  # False: analytic, drawn without a store by the script's render(out_dir, command=...)

    @property
    def run_command(self) -> str:
        return f"python run.py -m +experiment={self.experiment}" if self.store else "(none: analytic)"

    @property
    def report_command(self) -> str:
        return f"python reports/{self.script}" + ("" if self.default else f" +experiment={self.experiment}")

    @property
    def config(self) -> Path:
        return CONF_DIR / "experiment" / f"{self.experiment}.yaml"


# the script's figure title, shared by every experiment it draws
TITLES = {
    "fig1_theory.py": "Fig. 1: optimal LR against batch size in theory, SGD (Eq 1) against sign descent (Eq 2, Eq 9)",
    "fig2_cnn5_fmnist.py": "Fig. 2: optimal LR against batch size, CNN on Fashion-MNIST, Adam",
    "fig3_resnet18_tinyimagenet.py": "Fig. 3: optimal LR against batch size at six training losses, ResNet-18 on "
                                     "Tiny-ImageNet, Adam (0, 0)",
    "fig4_distilgpt2_eli5.py": "Fig. 4: optimal LR against batch size, simplified DistilGPT2 on ELI5-Category",
    "fig5_moe_redpajama.py": "Fig. 5: optimal LR against batch size, fine-grained MoE on RedPajama-Data-1T-Sample "
                             "(the paper: RedPajama-v2), Adam",
    "fig6_distilgpt2_eli5_fine.py": "Fig. 6: a finer grid for Fig. 4(b), DistilGPT2 on ELI5-Category, Adam",
    "shakespeare_small.py": "Suite: optimal LR against batch size, a small language model on Shakespeare",
    "vit_cifar.py": "Suite: optimal LR against batch size, ViT on CIFAR",
    "ground_truth.py": "Suite: the ground truth, a noisy quadratic where the theory holds by construction",
}

ITEMS = [
    Item("Fig. 1", "fig1_theory", "fig1_theory.py",
         "theory: Eq 1, Eq 2 and the exact Eq 9 (rise, fall, rise to the Eq 17 limit); no training", store=False),
    Item("Fig. 2(b)", "fig2b_cnn5_fmnist_small_bs", "fig2_cnn5_fmnist.py",
         "CNN on Fashion-MNIST, Adam (0.9, 0.999), B 1-12 (Theorem 3 regime)"),
    Item("Fig. 2(c)", "fig2c_cnn5_fmnist_large_bs", "fig2_cnn5_fmnist.py",
         "CNN on Fashion-MNIST, Adam (0.9, 0.999), B 64-1164 (Theorem 4 regime: saturation)"),
    Item("Fig. 3", "fig3_resnet18_tinyimagenet", "fig3_resnet18_tinyimagenet.py",
         "ResNet-18 on Tiny-ImageNet, Adam (0, 0), six targets; B_noise moves to larger B as the loss falls",
         paper_targets=(5.213, 5.146, 5.113, 4.863, 4.741, 4.633)),
    Item("Fig. 4(a)", "fig4a_distilgpt2_eli5_adam00", "fig4_distilgpt2_eli5.py",
         "simplified DistilGPT2 on ELI5-Category, Adam (0, 0)"),
    Item("Fig. 4(b)", "fig4b_distilgpt2_eli5_adam", "fig4_distilgpt2_eli5.py",
         "simplified DistilGPT2 on ELI5-Category, Adam (0.9, 0.999)"),
    Item("Fig. 5", "fig5_moe_redpajama", "fig5_moe_redpajama.py",
         "fine-grained MoE on RedPajama-Data-1T-Sample, Adam (0.9, 0.999), Table 1's lattice: B 0.192M-10.992M "
         "tokens, LR 2e-6 to 6e-5, 10 rounds"),
    Item("Fig. 5, scaled down", "fig5_moe_redpajama_small", "fig5_moe_redpajama.py",
         "the suite's one-GPU grid for Fig. 5: the same MoE and data, B 8,192-262,144 tokens, LR 1.25e-4 to 4e-3, "
         "3 rounds", default=False),
    Item("Fig. 6", "fig6_distilgpt2_eli5_fine", "fig6_distilgpt2_eli5_fine.py",
         "a finer (B, LR) grid for the Fig. 4(b) setting"),
    Item("quickstart", "quickstart", "fig2_cnn5_fmnist.py",
         "the suite's CPU grid: CNN on Fashion-MNIST, B 1-256, LR 2.5e-4 to 1.6e-2", default=False),
    Item("shakespeare_small", "shakespeare_small", "shakespeare_small.py",
         "the suite's small language-model grid on Shakespeare"),
    Item("vit_cifar", "vit_cifar", "vit_cifar.py", "the suite's ViT grid on CIFAR"),
    Item("ground truth (sign)", "ground_truth_sign", "ground_truth.py",
         "noisy quadratic, Adam (0, 0): the pipeline must recover Eq 14's B_noise and Eq 9's rise and fall"),
    Item("ground truth (SGD)", "ground_truth_sgd", "ground_truth.py",
         "noisy quadratic, SGD: the pipeline must recover Eq 1 and no surge"),
    Item("ground truth (Eq 22)", "ground_truth_eq22", "ground_truth.py",
         "isotropic quadratic, SGD to a target: the pipeline must recover the closed form's S and Eq 22's B_noise"),
]


@dataclass(frozen=True)
class Gradients:
    """A paper item drawn from one point's per-example gradients (``reports/fig2a_fig8_gradients.py --figure``),
    not from a grid: the point it trains (Hydra overrides; a user's override of the same key wins), the script's
    options for it, and the data it needs. Not in ``ITEMS``: no store, and a run trains (minutes on a CPU for the
    CNN, a GPU for the MoE), so ``reports/index.py`` does not draw it."""

    label: str
    figure: str  # the script's --figure
    output: str  # reports/figures/<output>.png and .json
    point: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (option, value): the script's argparse defaults for this figure
    data: str  # python -m surge_repro.tasks.prepare task=<data>
    shows: str
    status: str = ""  # what stands in the way of running it here, if anything

    @property
    def command(self) -> str:
        return f"python reports/fig2a_fig8_gradients.py --figure {self.figure}"


GRADIENTS = {
    "2a": Gradients(
        "Fig. 2(a)", "2a", "fig2a_gradients",
        ("task=fashion_mnist", "model=cnn5", "optimizer=adam", "batch=8", "optimizer.lr=1e-3"),
        (("steps", "0,300"), ("examples", "1024"), ("chunk", "256"), ("top", "3"), ("random", "3"),
         ("hessian_probes", "16")),
        "fashion_mnist",
        "CNN on Fashion-MNIST, Adam, B = 8: Theorem 3's per-parameter bound pi sigma_i^2 / (2 mu_i^2), B_simple, and "
        "Eq 14 / 16 / 1 from Hessian-vector products (vmap over the examples)"),
    "8": Gradients(
        "Fig. 8", "8", "fig8_moe_gradients",
        ("task=redpajama", "model=moe_shared", "optimizer=adam", "batch=65536", "optimizer.lr=1e-3"),
        # a 79M-parameter gradient per example: 8 of them (2.5 GB) per chunk; one backward per example (vmap refuses
        # the expert loop), so no Hessian part; one coordinate of each kind from each MoE part: 6 panels
        (("steps", "0,1000"), ("examples", "1024"), ("chunk", "8"), ("top", "1"), ("random", "1"),
         ("hessian_probes", "0")),
        "redpajama",
        "fine-grained MoE (moe_shared) on RedPajama-Data-1T-Sample, Adam, B = 65,536 tokens (128 sequences), LR "
        "1e-3 (the middle of fig5_moe_redpajama_small): per-sequence gradients of the router, routed-expert and "
        "shared-expert coordinates with the largest |mu| and at random, against the fitted Gaussian",
        status="not run: RedPajama cannot be had here (python -m surge_repro.tasks.prepare task=redpajama needs the "
               "hub), and the 79M-parameter MoE is meant for a GPU (time not measured); tests/test_diagnostics.py "
               "runs the same path on moe_tiny"),
}


def by_script(script: str | Path) -> tuple[str, list[Item]]:
    """The title of a report script (a path or file name) and the items it draws without arguments."""
    name = Path(script).name
    if name not in TITLES:
        raise KeyError(f"{name} is not in surge_repro.report.figures.TITLES: add it there with its items")
    return TITLES[name], [i for i in ITEMS if i.script == name and i.default]


def item_of(experiment: str) -> Item | None:
    return next((i for i in ITEMS if i.experiment == experiment), None)


def _final_in_sweep(argv: Sequence[str], store: str, experiment: str, finals: list[dict]) -> int:
    """How many points of the sweep ``argv`` are final in the store, matched by signature as
    ``python -m surge_repro.launch.status`` matches them. Only jobs whose (B, LR, seed) some final point has are signed:
    signing all 12,000 points of a 100-round grid takes minutes. Where the data are not here to fingerprint (a store
    copied from a cluster), a point counts when a final point has its (B, LR, seed)."""
    from surge_repro.point import signature
    from surge_repro.store import FINAL, PointDir
    from surge_repro.sweep import expand, group_jobs, hydra_overrides, with_pack_keys
    from surge_repro.tasks import DataError

    have = {(int(p["batch_size"]), f"{float(p['lr']):.6g}", int(p["seed"])) for p in finals}
    jobs = expand(argv)
    k = 0
    for group in group_jobs(jobs):  # one composition per batch size, as status.grid_points does
        base = compose(hydra_overrides(argv) + jobs[group[0]])
        for i in group:
            given = dict(o.lstrip("+~").split("=", 1) for o in jobs[i])
            try:  # the job's own LR and seed, read off its overrides: copying the config for each job is slow
                key = (int(base.batch), f"{float(given.get('optimizer.lr', base.optimizer.lr)):.6g}",
                       int(given.get("seed", base.seed)))
            except ValueError:  # not a plain number (an interpolation?): compose it
                cfg = with_pack_keys(base, jobs[i])
                key = (int(cfg.batch), f"{cfg.optimizer.lr:.6g}", int(cfg.seed))
            if key in have:
                try:
                    k += PointDir(store, experiment, signature(with_pack_keys(base, jobs[i]))).status() in FINAL
                except DataError:
                    k += 1
    return k


def sweep_status(item: Item, argv: Sequence[str] = ()) -> dict:
    """Where an item's grid stands: ``state`` (done, partial, not run, config missing), k of N, ``in_store`` (the
    experiment's final points in the store, in the sweep or not: what its figure draws) and a line of text.

    N is the number of points of the experiment's sweep (with the overrides ``argv``, e.g. ``rounds=4``; its
    configured rounds otherwise), as ``status.grid_points`` expands it; k is how many of them are final (done,
    capped, diverged) in the store.
    """
    from surge_repro.store import FINAL, PointDir, point_dirs
    from surge_repro.sweep import expand

    store = str(compose(list(argv)).paths.store)
    summaries = [PointDir(store, item.experiment, d.name).summary() for d in point_dirs(store, item.experiment)]
    finals = [s["point"] for s in summaries if s and s.get("status") in FINAL]
    if not item.config.exists():
        return {"state": "config missing", "k": len(finals), "n": None, "in_store": len(finals),
                "text": f"config missing: conf/experiment/{item.experiment}.yaml ({len(finals)} final points in "
                        f"the store)"}
    sweep = [f"+experiment={item.experiment}", *argv]
    n = len(expand(sweep))
    k = _final_in_sweep(sweep, store, item.experiment, finals) if finals else 0
    state = "done" if k == n else "partial" if k else "not run"
    text = {"done": f"done ({n} points)", "partial": f"partial {k} of {n}", "not run": f"not run (0 of {n})"}[state]
    if len(finals) > k:  # points of more rounds than asked for here, or of an earlier version of the grid
        text += f"; {len(finals) - k} more final points in the store outside this sweep"
    return {"state": state, "k": k, "n": n, "in_store": len(finals), "text": text}
