"""Compiled against eager training steps, measured side by side in one run on whatever device this is.

    python reports/bench_compile.py                          # torch.compile's default mode (inductor)
    python reports/bench_compile.py --mode reduce-overhead   # + CUDA graphs on a GPU (on a CPU: the same as default)
    python reports/bench_compile.py --pack-batch 1 4 --single-batch 64 --points 8 --window 0.2
    python reports/bench_compile.py --threads 1          # a CPU shared with other processes

For the paper's CNN (Fashion-MNIST shapes, random data: speed does not depend on them) it times, eager and compiled
(the root config's ``compile`` key, ``surge_repro/run/engines.py``): a pack of P points' step
(``engines.Pack.train_step``) at each ``--pack-batch``, and one point's step (``engines.train_step`` with the
compiled loss, as ``engines.Single`` runs it) at each ``--single-batch``. It prints per case the step times, their
ratio (eager / compiled: above 1, compiling pays) and the compile time (the first compiled call, less an eager step),
and writes them to reports/figures/bench_compile_<device>.json. Timings are medians of repeated windows after warm-up
(``bench_speed.timed``), each step on a fresh random batch (``Batches``); ``compare_compiled`` is the function other
scripts call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "reports"))

from bench_speed import cnn_task, sync, timed  # noqa: E402

from surge_repro.config import build, compose  # noqa: E402
from surge_repro.run.engines import Pack, compiled, train_step  # noqa: E402


def _first_call(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Batches:
    """A fresh random batch at every call, as training takes them: a step repeated on one batch overfits it within
    a few hundred steps, and its vanishing gradients (denormal floats) slow a CPU's kernels 100-fold (measured:
    3.5 to 400 ms per step of a pack of 8 at B = 1), whichever mode happens to be timed then."""

    def __init__(self, task, shape: tuple[int, ...], device: torch.device, count: int = 4096):
        gen = torch.Generator().manual_seed(1)
        self.task, self.calls = task, 0
        self.index = torch.randint(0, len(task), (count, *shape), generator=gen).to(device)

    def __call__(self) -> tuple:
        self.calls += 1
        return self.task.take(self.index[self.calls % len(self.index)])


def _pack_case(cfg, task, device, b: int, points: int, mode: str, window: float) -> dict:
    pbatch = Batches(task, (points, b), device)
    lrs = list(np.geomspace(1e-4, 1e-2, points))
    times = {}
    for how, key in (("eager", "off"), ("compiled", mode)):
        models = []
        for seed in range(points):
            torch.manual_seed(seed)
            models.append(build(cfg.model).to(device))
        pack = Pack(compose(["task=fashion_mnist", "model=cnn5", "batch=1", "optimizer.lr=1e-3", f"compile={key}"]),
                    task, models, lrs, device)
        times[f"{how}_first_s"] = _first_call(lambda: pack.train_step(pbatch()).tolist(), device)
        times[how] = timed(lambda: pack.train_step(pbatch()).tolist(), device, window)
    return times


def _single_case(cfg, task, device, b: int, mode: str, window: float) -> dict:
    batch = Batches(task, (b,), device)
    times = {}
    for how, key in (("eager", "off"), ("compiled", mode)):
        torch.manual_seed(0)
        model = build(cfg.model).to(device)
        optimizer = build(cfg.optimizer)(model.parameters())
        loss = compiled(lambda part: task.loss(model, part), key)
        times[f"{how}_first_s"] = _first_call(lambda: train_step(model, optimizer, None, task, batch(), loss=loss),
                                              device)
        times[how] = timed(lambda: train_step(model, optimizer, None, task, batch(), loss=loss).item(), device, window)
    return times


def compare_compiled(device: torch.device | str = "cpu", pack_batches=(1, 4, 16), points: int = 32,
                     single_batches=(64, 256), mode: str = "default", window: float = 0.5,
                     out: Path | None = None) -> list[dict]:
    """Eager against ``mode`` for the CNN's packed step (P = ``points``) at each of ``pack_batches`` and its one-point
    step at each of ``single_batches``, on ``device``; one row per case, printed and written to ``out``
    (reports/figures/bench_compile_<device>.json by default)."""
    device = torch.device(device)
    cfg = compose(["task=fashion_mnist", "model=cnn5", "optimizer=adam", "batch=1", "optimizer.lr=1e-3"])
    task = cnn_task(device)
    cases = [("pack", b, points) for b in pack_batches] + [("single", b, 1) for b in single_batches]
    rows = []
    print(f"{device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, compile={mode}", flush=True)
    for kind, b, p in cases:
        times = (_pack_case(cfg, task, device, b, p, mode, window) if kind == "pack"
                 else _single_case(cfg, task, device, b, mode, window))
        row = {"kind": kind, "batch": b, "points": p, "mode": mode,
               "eager_ms_per_step": 1e3 * times["eager"], "compiled_ms_per_step": 1e3 * times["compiled"],
               "ratio": times["eager"] / times["compiled"],
               "compile_s": times["compiled_first_s"] - times["eager"]}
        rows.append(row)
        print(f"  {kind:6s} P={p:3d} B={b:4d}: eager {row['eager_ms_per_step']:8.2f} ms/step | compiled "
              f"{row['compiled_ms_per_step']:8.2f} ms/step | eager/compiled {row['ratio']:5.2f}x | compile "
              f"{row['compile_s']:5.1f} s", flush=True)
    out = out or ROOT / "reports" / "figures" / f"bench_compile_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "window_s": window}
    out.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mode", default="default", help="torch.compile mode (engines.COMPILE_MODES)")
    parser.add_argument("--pack-batch", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--single-batch", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per timing window")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 on a shared machine, where a thread waiting for "
                             "a core another process holds stalls every kernel")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compare_compiled(args.device, args.pack_batch, args.points, args.single_batch, args.mode, args.window)


if __name__ == "__main__":
    main()
