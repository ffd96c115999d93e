"""Speed benchmark: sequential vs packed training, measured side by side in one run on whatever device this is.

    python reports/bench_speed.py                        # CNN steps at several B, the LM, a projection of Fig. 2
    python reports/bench_speed.py --protocol             # also the quickstart's grid end to end through the store
    python reports/bench_speed.py --batch 1 4 64 --points 64 --window 1
    python reports/bench_speed.py --device-check         # the speed targets, PASS/FAIL, in at most 8 min on a GPU
    python reports/bench_speed.py --device-check --quick # the same, small and short (seconds on a CPU; the tests')

Prints (and writes to reports/figures/bench_<device>.json):
1. For the paper's CNN (Fashion-MNIST shapes; the data are random, speed does not depend on them), per batch size:
   one point's step time run alone (``engines.train_step``, the loop every sequential point runs), a pack of P points'
   step time (``engines.Pack.train_step``, the loop every packed point runs), points x steps per second of each,
   their ratio, and the pack's peak memory (measured on a GPU; the launcher's estimate on a CPU).
2. A DistilGPT2-shaped LM (the suite's own ``models.lm.gpt2``, 6 layers, d = 768, SDPA attention, and its task's
   loss; ``precision=bf16`` on a GPU, i.e. bf16 autocast): tokens per second and model FLOP utilisation, 6 N D against
   the device's dense bf16 peak where known (datasheet, ``PEAK_BF16_TFLOPS``).
3. The projected wall time of the full Fig. 2 (b and c) at 100 seeds on this device: per batch size of Table 1, its
   LRs x seeds points at the mean steps a point ran in a measured round of that experiment (a store's, or the
   committed tidy tables ``reports/examples/<experiment>.csv.gz``; the step cap without one), priced at the
   per-point step time of the faster mode at that B (``project_fig2``). Step time only: probes and writes excluded.
4. With ``--protocol``: a slice of the quickstart's grid (B = 1, 4, 16 x 7 LRs x 2 seeds) through the real store,
   protocol and probes, one by one and packed, on the real Fashion-MNIST when it is prepared.

``--device-check`` runs 1-3 (B <= 1024 on a GPU) and compiled against eager (``reports/bench_compile.py``'s
``compare_compiled``, when that module is there), within ``DEVICE_CHECK_BUDGET_S``, and prints each speed target
of issue 18 with its measured value, threshold and PASS / FAIL / not measured (``TARGETS``), writing
``reports/figures/device_check_<device>.json``. It needs hydra and omegaconf (the Fig. 2 grids are read with
``surge_repro.config.compose``) besides torch and transformers.

Timings are medians of repeated windows after warm-up; on a GPU each window ends with a synchronisation.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from surge_repro.config import build, compose  # noqa: E402
from surge_repro.models.lm import gpt2  # noqa: E402
from surge_repro.run.engines import Pack, train_step  # noqa: E402
from surge_repro.run.packing import pack_bytes  # noqa: E402
from surge_repro.tasks import TensorTask  # noqa: E402
from surge_repro.tasks.text import lm_loss  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM datasheets
FIG2 = (("fig2b", "fig2b_cnn5_fmnist_small_bs"), ("fig2c", "fig2c_cnn5_fmnist_large_bs"))
EXAMPLES = ROOT / "reports" / "examples"  # the committed tidy tables of a measured Fig. 2 round
DISTILGPT2 = {"n_layer": 6, "n_embd": 768, "n_head": 12}  # stock DistilGPT2's depth and width


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float = 0.5, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` windows of at least ``min_seconds`` each, after warm-up.
    Windows this long keep a 2-core machine's timer and scheduler noise to a few percent."""
    fn()
    sync(device)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 2:  # warm-up, and how many calls fill a window
        fn()
        sync(device)
        calls += 1
    calls = max(1, round(calls * 2 * min_seconds / (time.perf_counter() - start) / 2))
    windows = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        windows.append((time.perf_counter() - start) / calls)
    return statistics.median(windows)


def cnn_task(device: torch.device, n: int = 8192) -> TensorTask:
    gen = torch.Generator().manual_seed(0)
    return TensorTask("random_fmnist_shaped", torch.randn(n, 1, 28, 28, generator=gen),
                      torch.randint(0, 10, (n,), generator=gen)).to(device)


def bench_cnn(device: torch.device, batches: list[int], points: int, window: float) -> list[dict]:
    cfg = compose(["task=fashion_mnist", "model=cnn5", "optimizer=adam", "batch=1", "optimizer.lr=1e-3"])
    task = cnn_task(device)
    rows = []
    for b in batches:
        torch.manual_seed(0)
        model = build(cfg.model).to(device)
        optimizer = build(cfg.optimizer)(model.parameters())
        gen = torch.Generator().manual_seed(1)
        index = torch.randint(0, len(task), (b,), generator=gen).to(device)
        batch = task.take(index)
        seq = timed(lambda: train_step(model, optimizer, None, task, batch).item(), device, window)

        models = []
        for seed in range(points):
            torch.manual_seed(seed)
            models.append(build(cfg.model).to(device))
        lrs = list(np.geomspace(1e-4, 1e-2, points))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base_mem = torch.cuda.memory_allocated(device)
        pack = Pack(cfg, task, models, lrs, device)
        pindex = torch.randint(0, len(task), (points, b), generator=gen).to(device)
        pbatch = task.take(pindex)
        packed = timed(lambda: pack.train_step(pbatch).tolist(), device, window)
        if device.type == "cuda":
            memory, how = torch.cuda.max_memory_allocated(device) - base_mem, "measured"
        else:
            memory, how = points * pack_bytes(models[0], task, b), "estimated"
        row = {"batch": b, "points": points, "seq_ms_per_step": 1e3 * seq, "pack_ms_per_step": 1e3 * packed,
               "seq_point_steps_per_s": 1 / seq, "pack_point_steps_per_s": points / packed,
               "ratio": seq * points / packed, "pack_memory_mib": memory / 2**20, "memory": how}
        rows.append(row)
        print(f"  B={b:5d}  one point {row['seq_ms_per_step']:7.2f} ms/step  {row['seq_point_steps_per_s']:8.0f} "
              f"pt-steps/s | pack of {points}: {row['pack_ms_per_step']:8.2f} ms/step  "
              f"{row['pack_point_steps_per_s']:8.0f} pt-steps/s | packed/sequential {row['ratio']:5.2f}x | "
              f"{row['pack_memory_mib']:.0f} MiB ({how})", flush=True)
        pack = models = None  # free them before the next batch size
    return rows


def bench_lm(device: torch.device, window: float, shape: dict | None = None, batch: int | None = None,
             seq: int | None = None, mode: str = "off") -> dict:
    """A step (forward, backward, fused AdamW) of the suite's GPT-2 (``models.lm.gpt2``; bf16 autocast on a GPU,
    float32 on a CPU) on random tokens, through the text task's loss: tokens/s and 6 N D model FLOP utilisation.
    ``mode``: the loss through torch.compile (``engines.compiled``, as a point's step runs it), or "off"."""
    cuda = device.type == "cuda"
    batch, seq, shape = batch or (64 if cuda else 4), seq or (512 if cuda else 128), shape or DISTILGPT2
    precision = "bf16" if cuda else "fp32"  # the bf16 target is a GPU's: no CPU here has a bf16 peak to compare with
    torch.manual_seed(0)
    model = gpt2(**shape, n_positions=seq, precision=precision).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq + 1), device=device)
    data = (tokens[:, :-1], tokens[:, 1:])
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loss_fn = lambda batch: lm_loss(model, batch)  # noqa: E731
    if mode != "off":  # imported here: eager timings need nothing of the compile path
        from surge_repro.run.engines import compiled

        loss_fn = compiled(loss_fn, mode)

    def step():
        loss = loss_fn(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    seconds = timed(step, device, window, repeats=3)
    flops = 6 * n_params * batch * seq / seconds
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    row = {"params": n_params, "shape": dict(shape), "precision": precision, "compile": mode, "batch": batch,
           "seq": seq, "ms_per_step": 1e3 * seconds, "tokens_per_s": batch * seq / seconds, "tflops": flops / 1e12,
           "peak_tflops": peak, "mfu": flops / (peak * 1e12) if peak else None, "device": name}
    mfu = f"{100 * row['mfu']:.1f}% of {peak:g} TFLOP/s bf16" if peak else "peak of this device unknown"
    how = precision + (", compiled" if mode != "off" else "")
    print(f"  {n_params / 1e6:.1f}M parameters ({how}), {batch} x {seq} tokens: {row['ms_per_step']:.0f} "
          f"ms/step, {row['tokens_per_s']:.0f} tokens/s, {row['tflops']:.2f} TFLOP/s (6ND): MFU {mfu}")
    return row


def steps_per_point(source: Path | str, experiment: str) -> dict[int, float]:
    """The mean steps a point ran at each batch size in a round of ``experiment``: from a store (a folder), or
    ``"examples"``, the committed tidy table ``reports/examples/<experiment>.csv.gz`` (so a bare machine has one)."""
    from surge_repro.store import load_grid, read_table

    try:
        if str(source) == "examples":
            table = read_table(EXAMPLES / f"{experiment}.csv.gz")
        else:
            table = load_grid(Path(source), experiment)
    except Exception:  # no store, no such experiment in it: the projection falls back to the step cap
        return {}
    if table.empty:
        return {}
    runs = table.drop_duplicates("signature")
    return {int(b): float(g.steps.mean()) for b, g in runs.groupby("batch_size")}


def _per_point_step(rows: list[dict], b: int) -> tuple[float, str]:
    """Seconds per point-step at batch size ``b`` the faster way (what launcher's pack=auto picks), linear in B
    between measured sizes and beyond the largest (where steps are compute-bound)."""
    sizes = np.array([r["batch"] for r in rows], dtype=float)
    best = []
    for mode in ("seq", "pack"):
        per = np.array([1 / r[f"{mode}_point_steps_per_s"] for r in rows])
        if b <= sizes[-1]:
            value = float(np.interp(b, sizes, per))
        else:
            slope = (per[-1] - per[-2]) / (sizes[-1] - sizes[-2])
            value = float(per[-1] + slope * (b - sizes[-1]))
        best.append((value, "packed" if mode == "pack" else "one by one"))
    return min(best)


def project_fig2(rows: list[dict], source: Path | str, seeds: int = 100) -> dict:
    """Wall time of Fig. 2(b) and 2(c) at ``seeds`` seeds on this device: per batch size of Table 1, its LRs x seeds
    points, each running the mean steps its points ran in a round (``steps_per_point`` of ``source``: a store, or
    "examples"; capped runs count their cap: they cost it), at the per-point step time of the faster mode there
    (``_per_point_step``). Without a round every point is priced at the step cap, an upper bound."""
    if len(rows) < 2:
        return {}
    out = {}
    for name, cfg_name in FIG2:
        cfg = compose([f"+experiment={cfg_name}"], hydra_node=True)
        params = cfg.hydra.sweeper.params
        batch_sizes = [int(b) for b in str(params["batch"]).split(",")]
        n_lr = len(str(params["optimizer.lr"]).split(","))
        measured = steps_per_point(source, cfg_name)
        if measured:  # S falls with B: interpolate log S in log B between the batch sizes the round has
            known = sorted(measured)
            where = "committed tables'" if str(source) == "examples" else "store's"
            origin = f"{where} round at B = {', '.join(str(b) for b in known)}, interpolated"
            log_b, log_s = np.log(known), np.log([measured[b] for b in known])
        else:
            origin = f"cap of {cfg.protocol.max_steps} steps"
        total, modes = 0.0, set()
        for b in batch_sizes:
            per, mode = _per_point_step(rows, b)
            steps = float(np.exp(np.interp(np.log(b), log_b, log_s))) if measured else float(cfg.protocol.max_steps)
            total += steps * n_lr * seeds * per
            modes.add(mode)
        out[name] = {"seconds": total, "points": len(batch_sizes) * n_lr * seeds, "steps_from": origin,
                     "modes": sorted(modes)}
        print(f"  {name}: {len(batch_sizes)} B x {n_lr} LRs x {seeds} seeds = {out[name]['points']} points: "
              f"{total / 3600:.1f} h on this device ({' and '.join(sorted(modes))}; steps per point from the "
              f"{origin})")
    return out


def bench_protocol(points_per_b: int = 2) -> dict:
    """A slice of the quickstart's grid through the real loop, store and probes: one by one, then packed."""
    from surge_repro.run.train import run, run_points

    out = {}
    for b in (1, 4, 16):
        grid = [(lr, s) for lr in (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2) for s in range(points_per_b)]
        timings = {}
        for mode in ("sequential", "packed"):
            with tempfile.TemporaryDirectory() as store:
                cfgs = [compose(["+experiment=quickstart", "threads=1", f"batch={b}", f"optimizer.lr={lr}",
                                 f"seed={s}", f"paths.store={store}"]) for lr, s in grid]
                start = time.perf_counter()
                if mode == "packed":
                    run_points(cfgs)
                else:
                    for cfg in cfgs:
                        run(cfg)
                timings[mode] = time.perf_counter() - start
        out[b] = {**timings, "points": len(grid), "ratio": timings["sequential"] / timings["packed"]}
        print(f"  B={b:3d}: {len(grid)} points, one by one {timings['sequential']:.1f} s, packed "
              f"{timings['packed']:.1f} s: {out[b]['ratio']:.2f}x")
    return out


# ------------------------------------------------------------------------------------------------------ device check
DEVICE_CHECK_BUDGET_S = 480  # issue 18: the whole check in at most 8 minutes on one GPU
# (key, what is measured, unit, threshold, the sense a PASS needs): issue 18's speed targets
TARGETS = (
    ("packed_vs_sequential", "packed against one by one, LeNet-5, B <= 64 (the smallest ratio)", "x", 10.0, ">="),
    ("fig2_100_seeds", "Fig. 2(b) + 2(c) at 100 seeds, projected from a measured round", "min", 30.0, "<="),
    ("lm_bf16_mfu", "DistilGPT2-shaped LM, bf16: model FLOP utilisation (6ND)", "%", 40.0, ">="),
)


def verdict(value: float | None, threshold: float | None, sense: str) -> str:
    """PASS or FAIL against ``threshold`` (``sense`` ">=" or "<="); "not measured" without a value; "measured" for a
    ratio the issue sets no threshold on (compiled against eager)."""
    if value is None:
        return "not measured"
    if threshold is None:
        return "measured"
    return "PASS" if (value >= threshold if sense == ">=" else value <= threshold) else "FAIL"


def target(key: str, what: str, unit: str, value: float | None, threshold: float | None, sense: str,
           why: str = "") -> dict:
    row = {"key": key, "what": what, "unit": unit, "value": value, "threshold": threshold, "sense": sense,
           "status": verdict(value, threshold, sense), "why": why}
    bound = f"{sense} {threshold:g} {unit}" if threshold is not None else "no threshold"
    shown = f"{value:.3g} {unit}" if value is not None else f"not measured ({why})"
    print(f"  {row['status']:>12}  {what}: {shown}  [target {bound}]" + (f"  ({why})" if value is not None and why
                                                                              else ""))
    return row


def compiled_cnn(device: torch.device, batches: list[int], points: int, window: float, seconds: float,
                 path: Path = ROOT / "reports" / "bench_compile.py") -> tuple[list[dict], str]:
    """The CNN's packed (P = ``points``) and one-point steps, eager and compiled, at each of ``batches`` (smallest
    first: the packing target's), by ``compare_compiled`` of ``reports/bench_compile.py`` (loaded when it is
    there), one case per call so that the cases stop once ``seconds`` would not hold another. Returns its rows and
    why some or all are missing ("" when none is)."""
    import importlib.util
    import inspect

    if not path.is_file():
        return [], f"{path.name} is not in {path.parent}"
    try:
        spec = importlib.util.spec_from_file_location("bench_compile", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        accepts = inspect.signature(module.compare_compiled).parameters
    except Exception as err:  # the other script's import: whatever breaks there, this check goes on without it
        return [], f"reports/bench_compile.py failed to load: {type(err).__name__}: {_first_line(err)}"
    rows, start, longest = [], time.perf_counter(), 0.0
    with tempfile.TemporaryDirectory() as tmp:  # its own JSON: this check writes the rows into its own
        for b in batches:
            for kind in ("pack", "single"):
                if seconds - (time.perf_counter() - start) < max(30.0, 1.5 * longest):
                    return rows, (f"stopped before {kind} B = {b}: too little of the {DEVICE_CHECK_BUDGET_S} s "
                                  f"budget left for another case")
                offered = {"device": device, "pack_batches": (b,) if kind == "pack" else (), "points": points,
                           "single_batches": (b,) if kind == "single" else (), "window": window,
                           "out": Path(tmp) / "compile.json"}
                began = time.perf_counter()
                try:
                    rows += module.compare_compiled(**{k: v for k, v in offered.items() if k in accepts})
                except Exception as err:  # compiling can fail many ways (no C compiler, no triton, a graph break)
                    return rows, f"compare_compiled failed at {kind} B = {b}: {type(err).__name__}: {_first_line(err)}"
                longest = max(longest, time.perf_counter() - began)
    return rows, ""


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:160]


def compiled_rows(rows: list[dict], points: int) -> list[dict]:
    """``compare_compiled``'s rows as ``bench_cnn``'s, compiled, at the batch sizes it timed both steps at."""
    by = {(r["kind"], r["batch"]): r for r in rows}
    out = []
    for b in sorted({b for kind, b in by if (("pack", b) in by and ("single", b) in by)}):
        seq, packed = by["single", b]["compiled_ms_per_step"] / 1e3, by["pack", b]["compiled_ms_per_step"] / 1e3
        out.append({"batch": b, "points": points, "seq_ms_per_step": 1e3 * seq, "pack_ms_per_step": 1e3 * packed,
                    "seq_point_steps_per_s": 1 / seq, "pack_point_steps_per_s": points / packed,
                    "ratio": seq * points / packed})
    return out


def _numbers(cnn: list[dict], fig2: dict, lm: dict | None, why: str) -> dict[str, tuple[float | None, str]]:
    """Each target's value from one mode's measurements (eager or compiled), and what it is of or why it is None."""
    small = [r for r in cnn if r["batch"] <= 64]
    bf16 = lm is not None and lm["precision"] == "bf16" and lm["mfu"] is not None
    return {
        "packed_vs_sequential": (min(r["ratio"] for r in small), f"B = {', '.join(str(r['batch']) for r in small)}, "
                                 f"a pack of {small[0]['points']}") if small else (None, why or "no B <= 64 timed"),
        "fig2_100_seeds": (sum(v["seconds"] for v in fig2.values()) / 60, f"on this device, from steps timed at "
                           f"B = {', '.join(str(r['batch']) for r in cnn)}") if fig2 else
                          (None, why or "steps timed at fewer than two batch sizes"),
        "lm_bf16_mfu": (100 * lm["mfu"], f"{lm['params'] / 1e6:.1f}M parameters, {lm['batch']} x {lm['seq']} tokens")
                       if bf16 else (None, why if lm is None else f"no bf16 peak known for {lm['device']}"
                                     if lm["precision"] == "bf16" else
                                     f"the LM ran in {lm['precision']} on {lm['device']}: bf16 is the GPU's"),
    }


def _speedups(result: dict) -> dict[str, float | None]:
    """Eager time / compiled time behind each target: the packed step at B <= 64 (the smallest; both timed side by
    side by ``compare_compiled``), the projected Fig. 2, the LM's step."""
    compiled = result["compiled"]
    pack = [r["ratio"] for r in compiled["cnn"] if r["kind"] == "pack" and r["batch"] <= 64]
    fig2 = [sum(v["seconds"] for v in f.values()) for f in (result["fig2_projection"], compiled["fig2_projection"])]
    return {"packed_vs_sequential": min(pack) if pack else None,
            "fig2_100_seeds": fig2[0] / fig2[1] if all(fig2) else None,
            "lm_bf16_mfu": result["lm"]["ms_per_step"] / compiled["lm"]["ms_per_step"] if compiled["lm"] else None}


def check_targets(result: dict) -> list[dict]:
    """Issue 18's targets (``TARGETS``) from a device check's measurements: each eager, each compiled (against the
    same threshold), and eager / compiled time behind each (no threshold), printed as they are made."""
    compiled = result["compiled"]
    eager = _numbers(result["cnn"], result["fig2_projection"], result["lm"], "")
    fast = _numbers(compiled["cnn_rows"], compiled["fig2_projection"], compiled["lm"], compiled["why"])
    speedups = _speedups(result)
    rows = [target(key, what, unit, *eager[key][:1], threshold, sense, eager[key][1])
            for key, what, unit, threshold, sense in TARGETS]
    for key, what, unit, threshold, sense in TARGETS:
        rows.append(target(f"compiled/{key}", f"compiled: {what}", unit, fast[key][0], threshold, sense, fast[key][1]))
        rows.append(target(f"compiled_vs_eager/{key}", f"compiled against eager (eager / compiled time): {what}", "x",
                           speedups[key], None, ">=", "" if speedups[key] else compiled["why"] or fast[key][1]))
    return rows


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def device_check(device: torch.device, quick: bool = False, out: Path | None = None) -> dict:
    """Issue 18's speed targets measured on ``device`` in one run, within ``DEVICE_CHECK_BUDGET_S``; ``quick``:
    a small pack, short windows and a small LM (seconds on a CPU: the tests'). Writes and returns the JSON."""
    cuda, start = device.type == "cuda", time.perf_counter()
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} thread(s))"
    batches = [1, 4, 16, 64] if quick else ([1, 4, 16, 64, 256, 1024] if cuda else [1, 4, 16, 64, 256])
    points, window = (8, 0.05) if quick else ((128, 0.5) if cuda else (35, 0.5))
    lm_shape, lm_batch, lm_seq = ({"n_layer": 2, "n_embd": 128, "n_head": 2}, 2, 32) if quick else (None, None, None)
    print(f"device check: {name}, torch {torch.__version__}{' (quick)' if quick else ''}")
    print(f"time budget: {DEVICE_CHECK_BUDGET_S} s in all: CNN {len(batches)} B x 2 modes x 6 windows of {window:g} s, "
          f"the LM 4 windows of {window:g} s, the projection from the committed tables, compiled vs eager in what "
          f"is left")
    parts, result = {}, {"device": name, "torch": torch.__version__, "quick": quick, "budget_s": DEVICE_CHECK_BUDGET_S}

    def clock(part: str, began: float) -> None:
        parts[part] = round(time.perf_counter() - began, 2)

    began = time.perf_counter()
    print(f"CNN (LeNet-5, Adam), one point alone vs a pack of {points}:")
    result["cnn"] = bench_cnn(device, batches, points, window)
    clock("cnn", began)
    began = time.perf_counter()
    print("Projected Fig. 2 at 100 seeds (steps per point from reports/examples):")
    result["fig2_projection"] = project_fig2(result["cnn"], "examples")
    clock("fig2_projection", began)
    began = time.perf_counter()
    print("DistilGPT2-shaped LM:" if lm_shape is None else f"LM of shape {lm_shape} (quick):")
    result["lm"] = bench_lm(device, window, lm_shape, lm_batch, lm_seq)
    clock("lm", began)
    began = time.perf_counter()
    print("Compiled vs eager (torch.compile's default mode; the CNN by reports/bench_compile.py):")
    if quick:
        why = "--quick: inductor compiles a case in 15-30 s on a CPU, longer than the whole quick check"
        crows, lm_compiled = [], None
    else:
        lm_compiled, lm_why = None, ""
        try:
            lm_compiled = bench_lm(device, window, lm_shape, lm_batch, lm_seq, mode="default")
        except Exception as err:  # as for the CNN: a failed compile is reported, not fatal
            lm_why = f"the LM failed to compile: {type(err).__name__}: {_first_line(err)}"
        left = DEVICE_CHECK_BUDGET_S - (time.perf_counter() - start) - 15  # 15 s kept for the report itself
        crows, why = compiled_cnn(device, batches, points, window / 2, left)
        why = "; ".join(w for w in (why, lm_why) if w)
    cnn_rows = compiled_rows(crows, points)
    result["compiled"] = {"cnn": crows, "cnn_rows": cnn_rows, "lm": lm_compiled, "why": why,
                          "fig2_projection": project_fig2(cnn_rows, "examples")}
    clock("compiled_vs_eager", began)
    if why:
        print(f"  compiled vs eager: not measured ({why})" if not crows and lm_compiled is None else f"  ({why})")
    print("Targets:")
    result["targets"] = check_targets(result)
    result["seconds"] = {**parts, "total": round(time.perf_counter() - start, 2)}
    over = result["seconds"]["total"] > DEVICE_CHECK_BUDGET_S
    print(f"time: {result['seconds']['total']:.0f} s of the {DEVICE_CHECK_BUDGET_S} s budget"
          f"{' (OVER BUDGET)' if over else ''} ({', '.join(f'{k} {v:.0f} s' for k, v in parts.items())})")
    out = out or ROOT / "reports" / "figures" / f"device_check_{device_slug(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"numbers: {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 1 4 16 64 256, and 1024 on a GPU)")
    parser.add_argument("--points", type=int, help="points per pack (default: 35 on a CPU, 128 on a GPU)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per timing window (5 windows each)")
    parser.add_argument("--store", default=str(ROOT / "store"), help="store with a round of Fig. 2(b)/(c)")
    parser.add_argument("--protocol", action="store_true", help="also time the quickstart's grid end to end")
    parser.add_argument("--no-lm", action="store_true", help="skip the language model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one worker's view)")
    parser.add_argument("--device-check", action="store_true", help="issue 18's speed targets, PASS/FAIL, and a JSON")
    parser.add_argument("--quick", action="store_true", help="with --device-check: small and short (seconds)")
    parser.add_argument("--out", help="with --device-check: the JSON's path (default reports/figures/...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device_check:
        device_check(device, args.quick, Path(args.out) if args.out else None)
        return
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({args.threads} thread(s))"
    batches = args.batch or ([1, 4, 16, 64, 256, 1024] if cuda else [1, 4, 16, 64, 256])
    points = args.points or (128 if cuda else 35)
    print(f"device: {name}, torch {torch.__version__}")
    print(f"CNN (LeNet-5, Adam), one point alone vs a pack of {points}:")
    result = {"device": name, "torch": torch.__version__, "cnn": bench_cnn(device, batches, points, args.window)}
    print("Projected Fig. 2 at 100 seeds:")
    result["fig2_projection"] = project_fig2(result["cnn"], Path(args.store))
    if not args.no_lm:
        print("DistilGPT2-shaped LM:")
        result["lm"] = bench_lm(device, args.window)
    if args.protocol:
        print("Quickstart grid slice through the store (real data):")
        result["protocol"] = bench_protocol()
    out = ROOT / "reports" / "figures" / f"bench_{'cuda' if cuda else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"numbers: {out}")


if __name__ == "__main__":
    main()
