"""Every result the README states is the JSON beside its figure in reports/examples/, with its interval: the
quickstart's table, its Eq 22 numbers, its verdicts (per target and for B_noise across targets) and the ground
truth's recovered numbers. A README edited without its JSON, or a JSON regenerated without the README, fails here."""

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "reports" / "examples"
README = (ROOT / "README.md").read_text()


def section(head: str, next_head: str) -> str:
    text = README.split(head, 1)[1]
    return text.split(next_head, 1)[0]


def lr(x: float) -> str:
    """An LR as the README writes it: 5e-4, 1.6e-2 (two significant digits)."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def g3(x: float) -> str:
    return f"{x:.3g}"


def target(t: float) -> str:
    """A target loss as the README writes it: 1.4, 1.0."""
    return f"{t:.1f}" if round(t, 1) == t else f"{t:g}"


def interval(value: float, ci: list[float], fmt=g3) -> str:
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


@pytest.fixture(scope="module")
def quickstart() -> tuple[str, dict]:
    numbers = json.loads((EXAMPLES / "quickstart.json").read_text())
    return section("### What the quickstart shows", "## Using it"), numbers


def test_the_quickstart_table_is_the_json_at_the_lowest_target(quickstart):
    text, numbers = quickstart
    fit = min(numbers["targets"], key=lambda t: t["target"])
    steps = min(numbers["steps_criterion"], key=lambda t: t["target"])
    assert f"At the target {target(fit['target'])} ({fit['n_seeds']} seeds" in text
    verdict_words = {"resolved": "resolved", "not identifiable": "not identifiable", "too few seeds": "too few seeds",
                     "tie": "tie", "not reached": "not reached"}
    for i, b in enumerate(fit["batch_sizes"]):
        state = fit["verdict"]["per_batch"][i]
        words = f"on the grid's edge ({fit['edge_side'][i]})" if state == "edge" else verdict_words[state]
        row = (f"| {b:g} | {lr(fit['lr_opt'][i])} | [{lr(fit['lr_opt_ci'][i][0])}, {lr(fit['lr_opt_ci'][i][1])}] | "
               f"{round(100 * fit['verdict']['within_one_step'][i])}% | {words} | "
               f"{lr(steps['lr_opt'][i])} [{lr(steps['lr_opt_ci'][i][0])}, {lr(steps['lr_opt_ci'][i][1])}] |")
        assert row in text, row


def test_the_quickstarts_numbers_and_verdicts_are_the_jsons(quickstart):
    text, numbers = quickstart
    text = " ".join(text.split())  # the README wraps its lines
    fit = min(numbers["targets"], key=lambda t: t["target"])
    assert f"B_noise = {interval(fit['b_noise'], fit['b_noise_ci'])}" in text
    assert f"S_min = {interval(fit['s_min'], fit['s_min_ci'])}" in text
    for law in ("adam", "sgd_alpha1", "sgd_alpha0.5"):
        assert interval(fit["eps_max"][law], fit["eps_max_ci"][law], lr) in text, law
    assert f"**Verdict at the target {target(fit['target'])}: {fit['verdict']['verdict']}.**" in text
    trend = numbers["b_noise_trend"]
    assert f"**{trend['verdict']}**" in text  # not "grows as training goes on" beside "no trend resolved"
    for t, b, ci in zip(trend["targets"], trend["b_noise"], trend["b_noise_ci"]):
        assert f"{interval(b, ci)} at {target(t)}" in text, t
    assert f"correlation {trend['spearman']:.2f} over {len(trend['targets'])} targets" in text
    drop, steps = numbers["eq21"]["drop"], numbers["eq21"]["steps"]  # Eq 21's line across the targets
    assert drop["n_targets"] == 3 and drop["inv_alpha_b_ci"][0] > 0 and steps["inv_alpha_b_ci"][0] < 0 < \
        steps["inv_alpha_b_ci"][1]
    assert (f"slope up, 1/alpha_B = {interval(drop['inv_alpha_b'], drop['inv_alpha_b_ci'])} (alpha_B = "
            f"{interval(drop['alpha_b'], drop['alpha_b_ci'])}, B_* = "
            f"{interval(drop['b_star'], drop['b_star_ci'])})") in text
    assert f"give 1/alpha_B = {interval(steps['inv_alpha_b'], steps['inv_alpha_b_ci'])}: no change" in text
    for t in numbers["targets"]:
        assert interval(t["b_simple"], t["b_simple_ci"]) in text, t["target"]
    for t in numbers["targets"]:  # Theorem 5: the B_noise the drops give, or the bound they only set
        t5 = t["theorem5"]
        if t5["b_noise_eq18"] is not None:
            assert f"B_noise of {interval(t5['b_noise_eq18'], t5['b_noise_eq18_ci'])} at {target(t['target'])}" \
                in text, t["target"]
        else:
            assert f"only say B_noise > {g3(t5['b_noise_eq18_ci'][0])}" in text, t["target"]
    done, capped = numbers["points"].get("done", 0), numbers["points"].get("capped", 0)
    assert f"{done + capped} points ({done} done, {capped} capped" in text


def test_the_ground_truth_table_is_the_json():
    text = " ".join(section("## Ground truth", "## The theory's inputs").split())
    numbers = {e["experiment"]: e for e in json.loads((EXAMPLES / "ground_truth.json").read_text())["experiments"]}
    sign, sgd = numbers["ground_truth_sign"], numbers["ground_truth_sgd"]
    assert f"B_noise = {interval(sign['fitted_b_noise'], sign['fitted_b_noise_ci'])} " \
           f"({100 * sign['b_noise_error']:+.1f}%)" in text
    assert f"eps_max = {sign['fitted_eps_max']:.4g} [{sign['fitted_eps_max_ci'][0]:.4g}, " \
           f"{sign['fitted_eps_max_ci'][1]:.4g}]" in text
    assert f"B_noise = {interval(sgd['fitted_b_noise'], sgd['fitted_b_noise_ci'])} " \
           f"({100 * sgd['b_noise_error']:+.1f}%)" in text
    assert f"eps_max = {sgd['fitted_eps_max']:.3g} [{sgd['fitted_eps_max_ci'][0]:.3g}, " \
           f"{sgd['fitted_eps_max_ci'][1]:.3g}]" in text
    worst = max(abs(r - 1) for r in sign["lr_opt_over_true"])
    assert f"every optimum within {math.ceil(100 * worst)}% of Eq 9's" in text
    assert f'"{sign["verdict"]}"' in text and f'"{sgd["verdict"]}"' in text
    for e in (sign, sgd):
        assert f"x {e['seeds']} seeds" in text, e["experiment"]
    eq22 = numbers["ground_truth_eq22"]  # Eq 22 against its closed form
    assert f"({eq22['runs']} runs: B = 4-64, 7 LRs" in text and f"{eq22['seeds']} seeds, probed every step" in text
    assert ", ".join(f"{x:.1f}" for x in eq22["steps"][:-1]) + f" and {eq22['steps'][-1]:.1f} steps" in text
    assert (f"B_noise = {interval(eq22['fitted_b_noise'], eq22['fitted_b_noise_ci'])} against the closed form's "
            f"{eq22['true_b_noise']:.3g} ({100 * eq22['b_noise_error']:+.1f}%)") in text
    truth = [int(x) for x in eq22["steps_true"]]
    assert "against " + ", ".join(map(str, truth[:-1])) + f" and {truth[-1]}." in text
    assert eq22["lr_opt"] == pytest.approx(eq22["lr_true"], rel=1e-5)  # "every fewest-steps LR is the closed form's"
    assert (f"(Eq 22: {interval(eq22['fitted_b_noise'], eq22['fitted_b_noise_ci'])} recovered, closed form "
            f"{eq22['true_b_noise']:.3g})") in README  # the table of figures
    ratio = eq22["fitted_b_noise"] / eq22["mccandlish_b_noise"]
    assert f"**{ratio:.1f} x McCandlish's {eq22['mccandlish_b_noise']:g}**" in text
    assert f"gives {eq22['eq1_b_noise']:g} and the B_simple measured in training " \
           f"{interval(eq22['b_simple'], eq22['b_simple_ci'])}" in text


def test_the_window_table_is_the_window_gap_json():
    import pandas as pd

    text = section("### Where the K-step window starts", "## Ground truth")
    flat = " ".join(text.split())
    result = json.loads((EXAMPLES / "window_gap_quickstart.json").read_text())
    points = pd.DataFrame(result["points"])
    per_b = points.groupby("batch_size").agg(
        gap_b=("gap_before", "mean"), gap_a=("gap_after", "mean"), max_b=("gap_max_before", "max"),
        max_a=("gap_max_after", "max"), exact=("exact_after", "mean"), sd_b=("drop_sd_before", "mean"),
        sd_a=("drop_sd_after", "mean"), sd_t=("drop_at_target_sd_after", "mean"))
    for b, r in per_b.iterrows():
        row = (f"| {b:g} | {r.gap_b:.3f} -> {r.gap_a:.3f} | {r.max_b:.3f} -> {r.max_a:.3f} | {round(100 * r.exact)}%")
        assert row in text, row
        assert f"| {r.sd_b:.3f} -> {r.sd_a:.3f} | {r.sd_t:.3f} |" in text, b
    fall = 100 * (1 - per_b.gap_a / per_b.gap_b)
    assert f"falls by {fall.min():.0f}-{fall.max():.0f}% at every B" in flat
    sd = 100 * (1 - per_b.sd_t / per_b.sd_a)
    assert f"per-run SD is {sd.min():.0f}-{sd.max():.0f}% below" in flat
    summary = result["summary"]
    assert f"{summary['probes_per_run']['after']:.1f} probes per run instead of " \
           f"{summary['probes_per_run']['before']:.1f}" in flat
    assert f"{summary['compute_s']['after']:.0f} s of compute against {summary['compute_s']['before']:.0f} s" in flat


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["quickstart", "fig2b_cnn5_fmnist_small_bs", "fig2c_cnn5_fmnist_large_bs"])
def test_a_committed_table_rebuilds_the_committed_numbers(tmp_path, experiment):
    # what lands is the figure, its JSON and its tidy table, never the store: the table alone must give the JSON
    from surge_repro.config import compose
    from surge_repro.report.render import render

    if not (EXAMPLES / f"{experiment}.json").exists():
        pytest.skip(f"{experiment} has no committed results yet")
    cfg = compose([f"+experiment={experiment}", f"paths.figures={tmp_path}",
                   f"report.table={EXAMPLES / f'{experiment}.csv.gz'}"])
    rebuilt = json.loads(render(cfg, "test").with_suffix(".json").read_text())
    committed = json.loads((EXAMPLES / f"{experiment}.json").read_text())
    for key in ("targets", "steps_criterion", "b_noise_trend", "points", "criterion"):
        assert rebuilt[key] == committed[key], key
    optima = (EXAMPLES / f"{experiment}.optima.csv")
    if optima.exists():
        assert (tmp_path / optima.name).read_text() == optima.read_text()


def test_ci_runs_the_readmes_test_command_and_it_runs_every_tier():
    """The README's second command is what .ci/run runs, verbatim, and it selects both tiers (plain pytest, the fast
    tier, deselects the slow one through pyproject's addopts)."""
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2, lines  # the quickstart, then the tests
    command = lines[1]
    assert command in (ROOT / ".ci" / "run").read_text()
    assert '-m "slow or not slow"' in command
    assert "-m 'not slow'" in (ROOT / "pyproject.toml").read_text()


def test_the_fig2b_run_is_its_json_table_and_budget():
    import re
    from collections import Counter

    import pandas as pd

    text = " ".join(section("### Fig. 2(b) from real runs", "### Fig. 2(c) from real runs").split())
    stem = EXAMPLES / "fig2b_cnn5_fmnist_small_bs"
    numbers = json.loads(stem.with_suffix(".json").read_text())
    points = pd.read_csv(stem.with_suffix(".csv.gz")).drop_duplicates("signature")
    counts = points.status.value_counts()
    capped = points[points.status == "capped"]
    large, slow = (capped.lr >= 8e-3).sum(), (capped.lr == 1e-4).sum()
    assert (f"{len(points)} points ({counts['done']} done, {counts['capped']} capped: {large} at the largest LRs, "
            f"8e-3 to 1.6e-2, which stall, {slow} at 1e-4, too slow for the step cap, {len(capped) - large - slow} "
            f"others; {counts['diverged']} diverged)") in text
    seeds = sorted(points.seed.unique())
    assert seeds == list(range(len(seeds))) and f"seeds 0-{seeds[-1]}" in text and f"rounds={len(seeds)}" in text
    assert f"{points.wall_s.sum() / 3600:.1f} CPU-core-hours" in text
    drop, steps = numbers["targets"], numbers["steps_criterion"]
    assert [f["n_seeds"] for f in drop + steps] == [len(seeds)] * 10 and f"over the {len(seeds)} seeds" in text

    def ci(value, bounds):
        return interval(value, bounds)

    resolved = {}
    for f, st in zip(drop, steps):
        cd, cs = Counter(f["verdict"]["per_batch"]), Counter(st["verdict"]["per_batch"])
        resolved[f["target"]] = cd["resolved"]
        row = (f"| {target(f['target'])} | {f['verdict']['verdict']} ({cd['resolved']} of 12 resolved) | "
               f"{st['verdict']['verdict']} ({cs['resolved']} of 12 resolved) | {lr(st['lr_opt'][0])} -> "
               f"{lr(st['lr_opt'][-1])} | {ci(st['b_noise'], st['b_noise_ci'])} | "
               f"{ci(st['b_simple'], st['b_simple_ci'])} | {round(100 * st['curve']['adam']['unfit_share'])}% of "
               f"replicates |")
        assert row in text, row
    assert not any(st["verdict"]["verdict"] == "surge supported" for st in steps)  # "no fall ... is resolved"
    assert all(not f["verdict"]["falls"] for f in drop)
    assert [st["verdict"]["verdict"] for st in steps[2:]] == ["rise only"] * 3 and "resolved as a rise at 1.0, 0.8" \
        in text
    first = steps[0]  # target 1.5: the rise with a dip at B = 3
    assert first["verdict"]["verdict"] == "not single-peaked" and [2.0, 3.0] in first["verdict"]["falls"]
    top = [int(b) for b, x in zip(first["batch_sizes"], first["lr_opt"]) if x == max(first["lr_opt"])]
    assert first["lr_opt"][:3] == [1.5e-3, 4e-3, 2e-3] and max(first["lr_opt"]) == 6e-3
    assert (f"from 1.5e-3 (B = 1) to 6e-3 (B = {', '.join(map(str, top))}) with a resolved dip at B = 3 (2e-3 against "
            f"4e-3 at B = 2)") in text
    b_noise = [st["b_noise"] for st in steps]
    assert f"B_noise at {min(b_noise):.0f}-{max(b_noise):.0f} at every target, above the grid" in text
    assert min(st["b_noise_ci"][0] for st in steps) > 3 and min(b_noise) > 12
    unfit = [round(100 * st["curve"]["adam"]["unfit_share"]) for st in steps]
    assert f"in {min(unfit)}-{max(unfit)}% of the replicates" in text
    assert resolved == {1.5: 1, 1.2: 0, 1.0: 0, 0.8: 0, 0.6: 0} and "resolves 1 optimum of 60 (B = 10" in text
    assert drop[0]["verdict"]["per_batch"][9] == "resolved"
    assert all(f["b_noise"] < 0 for f in drop[1:]) and f"{ci(drop[-1]['b_noise'], drop[-1]['b_noise_ci'])} at 0.6" \
        in text
    assert {f["theorem5"]["verdict"] for f in drop} == {"unresolved"}
    negative = [sum(x < 0 for x in f["theorem5"]["max_drop"]) for f in drop]
    assert (f"negative at {negative[0]} of 12 batch sizes at target 1.5, {negative[1]} at 1.2, {negative[2]} at 1.0, "
            f"{negative[3]} at 0.8 and {negative[4]} at 0.6") in text
    simple = [(st["b_simple"], st["b_simple_ci"]) for st in steps]
    assert f"from {ci(*simple[0])} at 1.5 to {ci(*simple[-1])} at 0.6" in text
    later = [c for _, c in simple[1:]]  # targets 1.2 to 0.6: pairwise disjoint, rising
    assert all(a[1] < b[0] for a, b in zip(later, later[1:])) and "pairwise disjoint from 1.2 on" in text
    line, no_line = numbers["eq21"]["steps"], numbers["eq21"]["drop"]  # Eq 21 across the five targets
    assert line["inv_alpha_b_ci"][0] < 0 < line["inv_alpha_b_ci"][1] and line["n_targets"] == 5
    assert (f"1/alpha_B = {ci(line['inv_alpha_b'], line['inv_alpha_b_ci'])} and B_* = "
            f"{ci(line['b_star'], line['b_star_ci'])}: no change with the loss resolved") in text
    assert no_line["b_star"] is None and no_line["n_targets"] == 1 and "no line (B_noise <= 0 at 4 of 5" in text
    ratios = [max(a, b) / min(a, b) for a, (b, _) in zip(b_noise, simple)]
    assert max(ratios) <= 2.3 < max(ratios) + 0.1 and "within a factor of 2.3 at every target" in text
    totals, budget = {}, {}
    for kind in ("steps", "drop"):
        budget[kind] = (EXAMPLES / f"fig2b_cnn5_fmnist_small_bs.budget_{kind}.txt").read_text()
        totals[kind] = [float(x) for x in re.findall(r"total: \d+ points, (\S+) core-hours", budget[kind])]
    s = totals["steps"]  # targets 1.5, 1.2, 1.0, 0.8, 0.6
    assert f"{s[0]:g} core-hours at target 1.5 and {min(s[1:]):.0f}-{max(s[1:]):.0f} at the others" in text
    needed = [int(x) for x in re.findall(r"^\s+\d+\s+\d+\s+\d+\s+(\d+)\s", budget["steps"], re.M)]
    assert f"({min(needed)} to {max(needed)} seeds per batch size" in text and "> 4096" not in budget["steps"]
    d = totals["drop"]
    assert f"the paper's drop needs {min(d):.0f}-{max(d):.0f} core-hours per target" in text
    beyond = re.findall(r"(\d) batch size\(s\) need more than 4096 seeds", budget["drop"])
    assert sum(map(int, beyond)) == budget["drop"].count("> 4096") == 5 and "5 batch sizes at 1.0 and 0.8" in text


def test_the_fig2c_run_is_its_json_table_and_budget():
    import re
    from collections import Counter

    import pandas as pd

    text = " ".join(section("### Fig. 2(c) from real runs", "Each experiment's file starts").split())
    stem = EXAMPLES / "fig2c_cnn5_fmnist_large_bs"
    numbers = json.loads(stem.with_suffix(".json").read_text())
    points = pd.read_csv(stem.with_suffix(".csv.gz")).drop_duplicates("signature")
    counts = Counter(points.status)
    diverged = points[points.status == "diverged"]
    assert set(diverged.lr) == {3.2e-2} and "diverged: all at 3.2e-2" in text
    assert (f"{len(points)} points ({counts['done']} done, {counts['capped']} capped, {counts['diverged']} "
            f"diverged") in text
    seeds = sorted(points.seed.unique())
    assert seeds == list(range(5)) and "seeds 0-4" in text and "rounds=5" in text
    hours = points.wall_s.sum() / 3600
    assert f"{hours:.1f} CPU-core-hours (about {hours * 60 / len(seeds) / 2:.0f} min per round on 2 cores)" in text
    drop, steps = numbers["targets"], numbers["steps_criterion"]
    assert [f["n_seeds"] for f in drop + steps] == [5] * 10 and "over the 5 seeds" in text

    def ci(fit, key):
        return interval(fit[key], fit[f"{key}_ci"])

    resolved = {"drop": [], "steps": []}
    for f, st in zip(drop, steps):
        cd, cs = Counter(f["verdict"]["per_batch"]), Counter(st["verdict"]["per_batch"])
        resolved["drop"].append(cd["resolved"])
        resolved["steps"].append(cs["resolved"])
        row = (f"| {target(f['target'])} | {f['verdict']['verdict']} ({cd['resolved']} of 12 resolved) | "
               f"{st['verdict']['verdict']} ({cs['resolved']} of 12 resolved) | {lr(st['lr_opt'][0])} -> "
               f"{lr(st['lr_opt'][-1])} | {ci(st, 'b_noise')} | {ci(st, 'b_simple')} |")
        assert row in text, row
    # the fewest steps: saturation, no fall resolved, every optimum resolved at 0.8 and 0.6
    chosen = [x for st in steps for x in st["lr_opt"]]
    assert (min(chosen), max(chosen)) == (4e-3, 1.6e-2) and "between 4e-3 and 1.6e-2 at every batch size" in text
    assert not any(any(st["on_edge"]) for st in steps) and "never on the grid's edge" in text
    assert not any(st["verdict"]["falls"] for st in steps) and "no fall resolved" in text
    assert resolved["steps"][3:] == [12, 12] and [st["verdict"]["verdict"] for st in steps[3:]] == ["rise only"] * 2
    assert [st["verdict"]["rises"][0] for st in steps[3:]] == [[164, 664], [64, 464]]
    assert "B 164 -> 664 at 0.8 and B 64 -> 464 at 0.6" in text
    for st in steps[3:]:  # 8e-3 at the smallest B, 1.6e-2 from there on to B = 1164
        first = st["lr_opt"].index(1.6e-2)
        assert set(st["lr_opt"][:first]) == {8e-3} and st["lr_opt"][-1] == 1.6e-2
    for st in steps[1:3]:  # 1.2 and 1.0: 4e-3 at B = 964-1164, 8e-3 at B = 64-264
        assert st["lr_opt"][-3:] == [4e-3] * 3 and st["lr_opt"][:3] == [8e-3] * 3
    assert "B = 964-1164) sit at 4e-3 against 8e-3 at B = 64-264" in text
    # the drop
    assert "resolves " + ", ".join(map(str, resolved["drop"][:-1])) + f" and {resolved['drop'][-1]} optima" in text
    valley = drop[1]["verdict"]
    assert valley["verdict"] == "not single-peaked" and [464, 964] in valley["falls"] and [964, 1064] in valley["rises"]
    assert "falls (B 464 -> 964) and rises again (B 964 -> 1064)" in text
    assert sum(x == 1.6e-2 for f in drop for x in f["lr_opt"]) > 30 and "mostly at 1.6e-2" in text
    # B_noise across targets: Eq 22 (fewest steps) rises, Eq 21's line resolves it, B_simple with it
    b22 = [st["b_noise"] for st in steps]
    assert b22 == sorted(b22) and steps[0]["b_noise_ci"][1] < steps[-1]["b_noise_ci"][0]
    assert f"rises from {ci(steps[0], 'b_noise')} at 1.5 to {ci(steps[-1], 'b_noise')} at 0.6" in text
    line = numbers["eq21"]["steps"]
    assert line["n_targets"] == 5 and line["inv_alpha_b_ci"][0] > 0
    assert f"Fig. 2(c) resolves it by the fewest steps: alpha_B = {interval(line['alpha_b'], line['alpha_b_ci'])}." \
        in " ".join(README.split())
    assert f"(Fig. 2(c), fewest steps: alpha_B = {interval(line['alpha_b'], line['alpha_b_ci'])})" in README  # table
    assert (f"alpha_B = {interval(line['alpha_b'], line['alpha_b_ci'])} and B_* = "
            f"{interval(line['b_star'], line['b_star_ci'])} examples (1/alpha_B = "
            f"{interval(line['inv_alpha_b'], line['inv_alpha_b_ci'])}, above 0)") in text
    assert [st["b_simple"] for st in steps] == sorted(st["b_simple"] for st in steps)
    assert f"from {ci(steps[0], 'b_simple')} to {ci(steps[-1], 'b_simple')}" in text
    trend = numbers["b_noise_trend"]
    assert trend["verdict"] == "rises as the loss falls" and f'"{trend["verdict"]}"' in text
    assert "(targets 1.5 -> 0.8, 1.2 -> 0.8)" in trend["text"] and "(1.5 -> 0.8 and 1.2 -> 0.8 resolved)" in text
    assert max(st["b_simple"] for st in steps) < 264  # "at or below the grid's first batch sizes"
    # Theorem 5
    t5 = [f["theorem5"] for f in drop]
    assert [t["verdict"] for t in t5] == ["unresolved", "consistent", "consistent", "consistent", "unresolved"]
    for t, at in zip(t5[1:4], ("1.2", "1.0", "0.8")):
        assert f"{interval(t['b_noise_eq18'], t['b_noise_eq18_ci'])} at {at}" in text, at
    # the seed budget
    totals, budget = {}, {}
    for kind in ("steps", "drop"):
        budget[kind] = (EXAMPLES / f"fig2c_cnn5_fmnist_large_bs.budget_{kind}.txt").read_text()
        totals[kind] = [x for x in re.findall(r"total: \d+ points, (\S+) core-hours", budget[kind])]
    assert "need " + ", ".join(totals["steps"][:-1]) + f" and {totals['steps'][-1]} core-hours" in text
    assert "the paper's drop " + ", ".join(totals["drop"][:-1]) + f" and {totals['drop'][-1]} (1" in text
    assert "> 4096" not in budget["steps"] and budget["drop"].count("> 4096") == 1
    needed = re.findall(r"^\s+(\d+)\s+\d+\s+5\s+(\d+)\s", budget["steps"].split("at target 1 from")[1]
                        .split("seed budget")[0], re.M)
    assert [int(n) for b, n in needed if b in ("664", "764")] == [512, 2048] and "need 512 and 2048 seeds" in text


def test_the_compile_sentence_is_its_benchmark_json():
    text = " ".join(section("`compile=default`", "**W&B**").split())
    rows = json.loads((EXAMPLES / "bench_compile_cpu.json").read_text())["rows"]
    pack = [r for r in rows if r["kind"] == "pack"]
    single = [r for r in rows if r["kind"] == "single"]
    assert [r["batch"] for r in pack] == [1, 4, 16] and {r["points"] for r in pack} == {32}
    assert ", ".join(f"{r['ratio']:.2f}x" for r in pack[:-1]) + f" and {pack[-1]['ratio']:.2f}x for packs of 32" in text
    assert " and ".join(f"{r['ratio']:.2g}x" for r in single) + " for one point at B = 64 and 256" in text
    assert max(r["ratio"] for r in rows) < 1.05 and "so eager is the default" in text  # "did not pay"
