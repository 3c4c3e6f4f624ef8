"""Packed sweeps: how close a sweep of small trials sharing one GPU comes to that GPU's saturation ceiling.

    python benchmarks/packing.py [--preset llama-20m] [--formats bf16,sim:E4M3] [--trials 16] [--per-gpu 8]
        [--steps 200] [--seq-len 256] [--batch 32] [--device cuda] [--out DIR] [--json OUT.json]

For each format, in one run, both through `robustprec sweep` (the same Ray Tune path and per-trial settings):
  alone   a sweep of one trial holding the whole device: its steady tokens/s (steps after the first).
  packed  a sweep of `--trials` trials (seeds), `--per-gpu` at a time on the device (resources {GPU: 1/per_gpu}),
          timed end to end from the command's start: trials per GPU-hour and aggregate tokens/s.
  ceiling the steady-state aggregate of `--per-gpu` concurrent trials, from the packed trials' own steps: the
          tokens of every steady step (each step's wall-clock interval from the curve's `time` and `step_time_s`)
          over the time during which `--per-gpu` trials were stepping at once (`concurrent_rate`), as trials per
          GPU-hour. Start-up (process, imports, CUDA context, compilation) is what separates `packed` from it.
          Blank where the trials never all overlapped (raise --steps).
Prints a table (with each packed trial's own steady rate, median: on the H200 in session 9 it exceeded the lone
trial's when that ran through `robustprec train`), and a second that splits the packed sweep's wall time: before
its first trial was asked (command start-up, Ray, Tune), the trials (from the first asked to the last step's end)
and after, with the trials' start-up (asked to first step's end; a trial on a reused actor skips the imports).
`--json` writes the numbers. The device is whatever `train.device` resolves (`--device`).
Session 9 replaced a ceiling of per-gpu × each trial's own steady rate, which counted trials whose steady steps
did not overlap as concurrent (H200: 14× one trial alone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from robustprec.tracking.store import read_curve

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"


def _settings(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    sets: dict[str, Any] = {
        "model.preset": args.preset, "numerics.backend": fmt, "train.steps": args.steps,
        "train.seq_len": args.seq_len, "train.micro_batch_size": args.batch, "train.global_batch_size": args.batch,
        "train.eval_interval": args.steps, "train.eval_sequences": 32, "train.sharpness.sequences": 32,
        "train.device": args.device, "train.checkpoint_interval": 0, "optim.lr": 1e-3, "optim.warmup_steps": 20,
        "tracking.enabled": False,
    }  # fmt: skip
    if args.data:
        sets["data.path"] = args.data
    return sets


def _cli(argv: list[str], sweep_dir: Path) -> tuple[float, float, dict[str, str]]:
    """Run `robustprec ARGV`: its (start, end) on the wall clock (the clock of the curves' `time`) and the errors of
    trials that ended in error (`trial_errors` of `sweep_dir`; reported on stderr and left out); any other failure
    exits with the command's output."""
    start = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "robustprec", *argv], cwd=REPO, capture_output=True, text=True
    )
    end = time.time()
    errors = trial_errors(sweep_dir)
    if res.returncode and not errors:
        raise SystemExit(
            f"robustprec {argv[0]} failed (rc {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        )
    for trial, error in errors.items():
        print(f"warning: trial {trial} ended in error, left out: {error}", file=sys.stderr)
    return start, end, errors


def trial_errors(sweep_dir: Path) -> dict[str, str]:
    """The error each errored trial of the sweep at `sweep_dir` recorded, by trial id."""
    return {
        p.parent.name: str(json.loads(p.read_text()).get("error"))
        for p in sorted(sweep_dir.glob("trials/*/error.json"))
    }


def concurrent_rate(intervals: list[tuple[float, float, float]], at_least: int) -> tuple[float, float] | None:
    """Aggregate rate while at least `at_least` intervals overlap: ``(tokens per second, seconds)``, or None if
    they never do. An interval is ``(start, end, tokens)``, its tokens spread evenly over it."""
    events = sorted(
        [(a, 1, n / (b - a)) for a, b, n in intervals if b > a]
        + [(b, -1, -n / (b - a)) for a, b, n in intervals if b > a]
    )
    active, rate, tokens, seconds, last = 0, 0.0, 0.0, 0.0, None
    for t, step, delta in events:
        if last is not None and active >= at_least:
            tokens, seconds = tokens + rate * (t - last), seconds + (t - last)
        active, rate, last = active + step, rate + delta, t
    return (tokens / seconds, seconds) if seconds > 0 else None


Trial = tuple[dict[str, Any], list[dict[str, Any]]]  # a trial's summary and its curve's rows


def _trials(root: Path) -> list[Trial]:
    """Each finished trial of the sweep at `root`: its summary and curve, read once."""
    return [
        (json.loads(p.read_text()), read_curve(p.parent).to_pylist())
        for p in sorted(root.glob("trials/*/summary.json"))
    ]


def _steady_steps(trials: list[Trial], tokens_per_step: int) -> list[tuple[float, float, float]]:
    """Every trial's steps after its first as wall-clock intervals with their tokens."""
    return [
        (r["time"] - r["step_time_s"], r["time"], tokens_per_step) for _, curve in trials for r in curve[1:]
    ]


def phases(trials: list[tuple[float, float, float]], start: float, end: float) -> dict[str, float]:
    """Where a sweep's wall time went, from its trials' (asked, first step's start, last step's end): before the
    first trial was asked (command start-up, Ray, Tune), from then to the last step's end, and after it."""
    asked = min(t[0] for t in trials)
    last = max(t[2] for t in trials)
    return {"before_first_trial_s": asked - start, "trials_s": last - asked, "after_last_step_s": end - last}


def slot_use(trials: list[tuple[float, float, float]], per_gpu: int) -> dict[str, float]:
    """How the sweep's `per_gpu` trial slots spent the trials' span (first trial asked to last step), as fractions:
    stepping (first step's start to last step's end), starting (asked to the first step's start) and idle (the
    rest: Tune between trials, each trial's final evaluation and exit, the last wave's tail)."""
    span = (max(t[2] for t in trials) - min(t[0] for t in trials)) * per_gpu
    stepping = sum(t[2] - t[1] for t in trials) / span
    starting = sum(t[1] - t[0] for t in trials) / span
    return {"stepping": stepping, "starting": starting, "idle": 1.0 - stepping - starting}


def _trial_times(trials: list[Trial]) -> list[tuple[float, float, float]]:
    """Each trial's (asked, first step's start, last step's end) on the wall clock."""
    return [
        (
            curve[0]["time"] - summary["startup_s"],
            curve[0]["time"] - curve[0]["step_time_s"],
            curve[-1]["time"],
        )
        for summary, curve in trials
    ]


def sweep_overrides(args: argparse.Namespace, fmt: str, trials: int, gpu: float) -> list[str]:
    """The `--set` arguments of a sweep of `trials` seeds of `fmt` on `args.preset` (the smoke config's own
    `sweep.models` would otherwise choose the model), `gpu` of a GPU each."""
    share = f", GPU: {gpu}" if args.device == "cuda" else ""
    sets = {**_settings(args, fmt), "sweep.seeds": trials, "sweep.formats": f"[{fmt!r}]", "sweep.lrs": "[1e-3]",
            "sweep.models": f"[{args.preset}]", "sweep.resources": f"{{CPU: {args.cpus}{share}}}",
            "sweep.max_concurrent": args.per_gpu}  # fmt: skip
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _sweep(
    args: argparse.Namespace, fmt: str, tmp: Path, name: str, trials: int, gpu: float
) -> tuple[float, float, dict[str, str]]:
    """Run a sweep of `trials` seeds of `fmt`; the command's (start, end) on the wall clock and its trials' errors."""
    storage = tmp / "sweeps"
    shutil.rmtree(storage / name, ignore_errors=True)  # no earlier run's records (errors) under this name
    argv = ["sweep", "--config", str(SMOKE), *sweep_overrides(args, fmt, trials, gpu), "--name", name,
            "--storage", str(storage), "--overwrite"]  # fmt: skip
    return _cli(argv, storage / name)


def startup_medians(trials: list[dict[str, float] | None], first: int) -> dict[str, dict[str, float]]:
    """Median of each start-up phase over the first `first` trials asked (started together on idle GPUs) and over
    the later ones (each started beside running trials); `trials` are the summaries' `startup_phases_s`, in the
    order the trials were asked for (None, a trial resumed from a checkpoint without them, is left out)."""
    groups = {"first": [t for t in trials[:first] if t], "later": [t for t in trials[first:] if t]}
    return {
        name: {k: statistics.median(t[k] for t in group) for k in group[0]}
        for name, group in groups.items()
        if group
    }


def measure(args: argparse.Namespace, fmt: str, tmp: Path) -> dict[str, Any]:
    tag = "".join(c if c.isalnum() else "-" for c in fmt)
    _sweep(args, fmt, tmp, f"alone-{tag}", 1, 1.0)
    finished = _trials(tmp / "sweeps" / f"alone-{tag}")
    if not finished:
        raise SystemExit(
            f"{fmt}: the lone trial ended in error (above); nothing to compare the packed sweep with"
        )
    ((alone, _),) = finished
    start, end, errors = _sweep(args, fmt, tmp, f"pack-{tag}", args.trials, 1 / args.per_gpu)
    wall = end - start
    packed = _trials(tmp / "sweeps" / f"pack-{tag}")
    done = [summary for summary, _ in packed]
    trained = {(t["model"], t["params"]) for t in (alone, *done)}
    if {m for m, _ in trained} != {args.preset}:
        raise SystemExit(f"the trials trained {sorted(trained)}, not {args.preset}")
    times = _trial_times(packed)
    by_ask = sorted(zip(times, done, strict=True), key=lambda pair: pair[0][0])
    asked = [summary for _, summary in by_ask]
    startups = sorted(s["startup_s"] for s in done)
    tokens_per_step = args.seq_len * args.batch
    tokens_per_trial = args.steps * tokens_per_step
    ceiling = concurrent_rate(_steady_steps(packed, tokens_per_step), args.per_gpu)
    split = phases(times, start, end)
    return {
        "format": fmt,
        "params": alone["params"],
        "trials": len(done),
        "errored_trials": errors,
        "alone_tokens_per_s": alone["tokens_per_s"],
        "alone_startup_s": alone["startup_s"],
        "packed_wall_s": wall,
        "packed_tokens_per_s": len(done) * tokens_per_trial / wall,
        "packed_trials_per_gpu_hour": len(done) * 3600 / wall,
        "median_trial_tokens_per_s": statistics.median(s["tokens_per_s"] for s in done),
        "median_trial_startup_s": statistics.median(startups),
        "trial_startup_s": startups,
        "startup_phases_s": startup_medians([t.get("startup_phases_s") for t in asked], args.per_gpu),
        **split,
        "trials_span_tokens_per_s": len(done) * tokens_per_trial / split["trials_s"],
        "slot_use": slot_use(times, args.per_gpu),
        "ceiling_tokens_per_s": ceiling[0] if ceiling else None,
        "ceiling_overlap_s": ceiling[1] if ceiling else 0.0,
        "ceiling_trials_per_gpu_hour": ceiling[0] * 3600 / tokens_per_trial if ceiling else None,
        "alone_trials_per_gpu_hour": alone["tokens_per_s"] * 3600 / tokens_per_trial,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| format | trials | alone tok/s | packed tok/s | packed / alone | ceiling tok/s (overlap s) "
          "| ceiling / alone | trials/GPU-h packed | ceiling | packed / ceiling | median start-up (s) "
          "| packed trial's own tok/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, c = r["alone_tokens_per_s"], r["ceiling_tokens_per_s"]
        ceiling = ("–", "–", "–", "–") if c is None else (
            f"{c:,.0f} ({r['ceiling_overlap_s']:.1f})", f"{c / a:.2f}x", f"{r['ceiling_trials_per_gpu_hour']:.0f}",
            f"{r['packed_trials_per_gpu_hour'] / r['ceiling_trials_per_gpu_hour']:.0%}")  # fmt: skip
        print(f"| {r['format']} | {r['trials']} | {a:,.0f} | {r['packed_tokens_per_s']:,.0f} "
              f"| {r['packed_tokens_per_s'] / a:.2f}x | {ceiling[0]} | {ceiling[1]} "
              f"| {r['packed_trials_per_gpu_hour']:.0f} | {ceiling[2]} | {ceiling[3]} "
              f"| {r['median_trial_startup_s']:.1f} | {r['median_trial_tokens_per_s']:,.0f} |")  # fmt: skip


def print_phases(rows: list[dict[str, Any]]) -> None:
    """The packed sweep's wall time split, its rate over the trials' span alone (from the first trial asked to the
    last step: a long study pays Ray's and Tune's start once) against the ceiling, and how the slots spent it."""
    print("| format | packed sweep s | before the first trial s | trials s | after the last step s "
          "| tok/s over the trials' span | / ceiling | slots stepping, starting, idle "
          "| trial start-up s: min, median, max |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, span, c = r["trial_startup_s"], r["trials_span_tokens_per_s"], r["ceiling_tokens_per_s"]
        use = r["slot_use"]
        print(f"| {r['format']} | {r['packed_wall_s']:.1f} | {r['before_first_trial_s']:.1f} | {r['trials_s']:.1f} "
              f"| {r['after_last_step_s']:.1f} | {span:,.0f} | {f'{span / c:.0%}' if c else '–'} "
              f"| {use['stepping']:.0%}, {use['starting']:.0%}, {use['idle']:.0%} "
              f"| {s[0]:.1f}, {r['median_trial_startup_s']:.1f}, {s[-1]:.1f} |")  # fmt: skip


def print_startup(rows: list[dict[str, Any]]) -> None:
    """Median start-up phases (s) of the trials started together first and of those started later."""
    names = list(dict.fromkeys(k for r in rows for g in r["startup_phases_s"].values() for k in g))
    print("| format | trials | " + " | ".join(n.replace("_", " ") for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        for group, medians in r["startup_phases_s"].items():
            cells = " | ".join(f"{medians[n]:.2f}" if n in medians else "–" for n in names)
            print(f"| {r['format']} | {group} | {cells} |")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama-20m")
    ap.add_argument("--formats", default="bf16,sim:E4M3")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--per-gpu", type=int, default=8)
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per packed trial")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default="")
    ap.add_argument("--out", default="", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--json", default="")
    return ap


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        rows = [measure(args, fmt, root / fmt.replace(":", "_")) for fmt in args.formats.split(",")]
    params = ", ".join(sorted({f"{r['params']:,}" for r in rows}))
    print(f"settings: {args.preset} ({params} parameters), seq {args.seq_len}, batch {args.batch}, {args.steps} steps, "
          f"{args.trials} trials, {args.per_gpu} per GPU, device {args.device}")  # fmt: skip
    print_table(rows)
    print()
    print_phases(rows)
    print()
    print_startup(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
