"""Speed benchmark: sequential vs packed training, measured side by side in one run on whatever device this is.

    python reports/bench_speed.py                        # CNN steps at several B, the LM, a projection of Fig. 2
    python reports/bench_speed.py --protocol             # also the quickstart's grid end to end through the store
    python reports/bench_speed.py --batch 1 4 64 --points 64 --window 1

Prints (and writes to reports/figures/bench_<device>.json):
1. For the paper's CNN (Fashion-MNIST shapes; the data are random, speed does not depend on them), per batch size:
   one point's step time run alone (``engines.train_step``, the loop every sequential point runs), a pack of P points'
   step time (``engines.Pack.train_step``, the loop every packed point runs), points x steps per second of each,
   their ratio, and the pack's peak memory (measured on a GPU; the launcher's estimate on a CPU).
2. A DistilGPT2-shaped LM (transformers' GPT-2 classes, 6 layers, d = 768; bf16 autocast and SDPA attention on a
   GPU): tokens per second and model FLOP utilisation, 6 N D against the device's dense bf16 peak where known.
3. The projected wall time of the full Fig. 2 (b and c) at 100 seeds on this device: per batch size of Table 1, its
   LRs x seeds points at the mean steps a point ran in the store's round of that experiment (the step cap without
   one), priced at the per-point step time of the faster mode at that B (``project_fig2``).
4. With ``--protocol``: a slice of the quickstart's grid (B = 1, 4, 16 x 7 LRs x 2 seeds) through the real store,
   protocol and probes, one by one and packed, on the real Fashion-MNIST when it is prepared.

Timings are medians of repeated windows after warm-up; on a GPU each window ends with a synchronisation.
"""

from __future__ import annotations

import argparse
import json
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
from surge_repro.run.engines import Pack, train_step  # noqa: E402
from surge_repro.run.packing import pack_bytes  # noqa: E402
from surge_repro.tasks import TensorTask  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM datasheets


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


def bench_lm(device: torch.device, window: float) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    cuda = device.type == "cuda"
    batch, seq = (64, 512) if cuda else (4, 128)
    config = GPT2Config(n_layer=6, n_embd=768, n_head=12, n_positions=512, vocab_size=50257,
                        attn_implementation="sdpa")
    model = GPT2LMHeadModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    seconds = timed(step, device, window, repeats=3)
    flops = 6 * n_params * batch * seq / seconds
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    row = {"params": n_params, "batch": batch, "seq": seq, "ms_per_step": 1e3 * seconds,
           "tokens_per_s": batch * seq / seconds, "tflops": flops / 1e12,
           "mfu": flops / (peak * 1e12) if peak else None, "device": name}
    mfu = f"{100 * row['mfu']:.1f}% of {peak:g} TFLOP/s bf16" if peak else "peak of this device unknown"
    print(f"  {n_params / 1e6:.0f}M parameters, {batch} x {seq} tokens: {row['ms_per_step']:.0f} ms/step, "
          f"{row['tokens_per_s']:.0f} tokens/s, {row['tflops']:.2f} TFLOP/s (6ND): MFU {mfu}")
    return row


def steps_per_point(store: Path, experiment: str) -> dict[int, float]:
    """The mean steps a point ran at each batch size, from a store with a round of ``experiment``."""
    from surge_repro.store import load_grid

    try:
        table = load_grid(store, experiment)
    except Exception:
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


def project_fig2(rows: list[dict], store: Path, seeds: int = 100) -> dict:
    """Wall time of Fig. 2(b) and 2(c) at ``seeds`` seeds on this device: per batch size of Table 1, its LRs x seeds
    points, each running the mean steps its points ran in the store's round (capped runs count their cap: they cost
    it), at the per-point step time of the faster mode there (``_per_point_step``). Without a round in the store
    every point is priced at the step cap, an upper bound."""
    if len(rows) < 2:
        return {}
    out = {}
    for name, cfg_name in (("fig2b", "fig2b_cnn5_fmnist_small_bs"), ("fig2c", "fig2c_cnn5_fmnist_large_bs")):
        cfg = compose([f"+experiment={cfg_name}"], hydra_node=True)
        params = cfg.hydra.sweeper.params
        batch_sizes = [int(b) for b in str(params["batch"]).split(",")]
        n_lr = len(str(params["optimizer.lr"]).split(","))
        measured = steps_per_point(store, cfg_name)
        if measured:  # S falls with B: interpolate log S in log B between the batch sizes the round has
            known = sorted(measured)
            source = f"store's round at B = {', '.join(str(b) for b in known)}, interpolated"
            log_b, log_s = np.log(known), np.log([measured[b] for b in known])
        else:
            source = f"cap of {cfg.protocol.max_steps} steps"
        total, modes = 0.0, set()
        for b in batch_sizes:
            per, mode = _per_point_step(rows, b)
            steps = float(np.exp(np.interp(np.log(b), log_b, log_s))) if measured else float(cfg.protocol.max_steps)
            total += steps * n_lr * seeds * per
            modes.add(mode)
        out[name] = {"seconds": total, "points": len(batch_sizes) * n_lr * seeds, "steps_from": source,
                     "modes": sorted(modes)}
        print(f"  {name}: {len(batch_sizes)} B x {n_lr} LRs x {seeds} seeds = {out[name]['points']} points: "
              f"{total / 3600:.1f} h on this device ({' and '.join(sorted(modes))}; steps per point from the "
              f"{source})")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 1 4 16 64 256, and 1024 on a GPU)")
    parser.add_argument("--points", type=int, help="points per pack (default: 35 on a CPU, 128 on a GPU)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per timing window (5 windows each)")
    parser.add_argument("--store", default=str(ROOT / "store"), help="store with a round of Fig. 2(b)/(c)")
    parser.add_argument("--protocol", action="store_true", help="also time the quickstart's grid end to end")
    parser.add_argument("--no-lm", action="store_true", help="skip the language model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one worker's view)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
