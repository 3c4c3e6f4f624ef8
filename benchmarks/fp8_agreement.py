"""Loss curves of `sim:fp8_tensorwise` beside torchao's real float8 training (tensorwise) on the same seed.

Compiled runs compile block by block (`train.compile_scope=blocks`: the recipe's one-graph compile took minutes at
llama-20m on the H200) and read telemetry only at the last step (no second, counting graph). The yardstick is the
accumulation-order noise of two bf16 runs that differ only in it (compiled vs eager: Inductor
fuses and orders the reductions differently): if the simulation is the real recipe, its curve differs from the real
one by about as much. Prints a table of per-step |Δ loss| (max, mean, last); --json writes it with the curves.

  GPU: python benchmarks/fp8_agreement.py --preset llama-20m --steps 200 --seq-len 256 --batch 32
  CPU: python benchmarks/fp8_agreement.py --preset tiny --steps 20 --seq-len 64 --batch 8
       (torchao's fp8 then runs emulated, and it ignores CPU autocast: it quantizes the float32 input where the
       simulation quantizes the bf16-rounded one, so on CPU the pair differs by more than the noise)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from robustprec.config import load_config
from robustprec.provenance import device_name
from robustprec.train.loop import train
from robustprec.train.reporting import Console

# label: (backend, compile, extra overrides). The sim recipe rounds its GEMM outputs to bf16, as the real one does.
RUNS: dict[str, tuple[str, bool, list[str]]] = {  # the pair under test first
    "fp8 (torchao tensorwise)": ("fp8", True, ["numerics.fp8_skip_small=false"]),
    "sim:fp8_tensorwise": ("sim:fp8_tensorwise", True, ["numerics.gemm_output=bf16"]),
    "bf16 compiled": ("bf16", True, []),
    "bf16 eager": ("bf16", False, []),
}
PAIRS = {  # what is compared: (a, b)
    "noise: bf16 compiled vs eager": ("bf16 compiled", "bf16 eager"),
    "sim:fp8_tensorwise vs fp8": ("sim:fp8_tensorwise", "fp8 (torchao tensorwise)"),
}


def losses(args: argparse.Namespace, backend: str, compiled: bool, extra: list[str]) -> list[float]:
    """The per-step training loss of one run."""
    cfg = load_config(None, [
        f"model.preset={args.preset}", f"numerics.backend={backend}", f"train.steps={args.steps}",
        f"train.seq_len={args.seq_len}", f"train.global_batch_size={args.batch}", f"train.compile={compiled}",
        f"seed={args.seed}", f"train.eval_interval={10 * args.steps}", "train.sharpness.enabled=false",
        "train.divergence.stop_early=false", f"data.path={args.data}", "train.compile_scope=blocks",
        "train.telemetry_interval=1000", *extra, *args.set,
    ])  # fmt: skip
    rows: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", callbacks=[Console(lambda row: rows.append(float(row["loss"])))])
    return rows


def compare(a: list[float], b: list[float]) -> dict[str, float]:
    d = [abs(x - y) for x, y in zip(a, b, strict=True)]
    return {"max": max(d), "mean": sum(d) / len(d), "last": d[-1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="llama-20m")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="", help="corpus path (default: embedded)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    curves: dict[str, list[float]] = {}
    out: dict[str, Any] = {
        "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
        "curves": curves,
    }
    for label, (backend, compiled, extra) in RUNS.items():
        t0 = time.perf_counter()
        curves[label] = losses(args, backend, compiled, extra)
        wall = time.perf_counter() - t0
        print(f"[fp8_agreement] {label}: final loss {curves[label][-1]:.4f} ({wall:.0f} s)", flush=True)
        if args.json:  # what is done so far survives a time limit
            Path(args.json).write_text(json.dumps(out, indent=1))
    out["pairs"] = {name: compare(curves[a], curves[b]) for name, (a, b) in PAIRS.items()}
    print(f"\n{out['device']}, {args.preset}, {args.steps} steps, seed {args.seed}: per-step |Δ loss|\n")
    print("| pair | max | mean | last |\n|---|---|---|---|")
    for name, d in out["pairs"].items():
        print(f"| {name} | {d['max']:.2e} | {d['mean']:.2e} | {d['last']:.2e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
