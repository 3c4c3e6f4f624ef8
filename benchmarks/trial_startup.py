"""Trial start-up overhead: time from `run_trial` to the end of the first optimizer step, per launcher.

Launchers compared (Ray already running, as inside a sweep):
  ray-train   Ray Train TorchTrainer with one worker (worker group, process group, DeepSpeed in a fresh actor)
  ray-task    the loop run directly inside a Ray task (Ray reuses CPU task workers, never GPU ones: max_calls=1)
  ray-actor   the loop run directly inside one long-lived Ray actor, called repeatedly (what a Tune sweep with
              reuse_actors=True does with launcher=direct)
  in-process  the loop in the calling process (the floor)

    python benchmarks/trial_startup.py [--device cpu|cuda] [--repeats 3] [--preset tiny] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robustprec.config import load_config
from robustprec.sweep.spec import TrialSpec
from robustprec.sweep.trial import ensure_ray, run_trial


def make_spec(root: Path, name: str, args: argparse.Namespace, launcher: str) -> TrialSpec:
    overrides = [
        f"model.preset={args.preset}",
        f"train.steps={args.steps}",
        "train.seq_len=128",
        "train.micro_batch_size=8",
        "train.global_batch_size=8",
        f"train.eval_interval={args.steps}",
        "train.eval_sequences=8",
        "train.sharpness.sequences=8",
        f"train.device={args.device}",
        f"train.launcher={'ray' if launcher == 'ray-train' else 'direct'}",
        "data.embedded_max_bytes=400000",
        f"sweep.resources={{'CPU': 1, 'GPU': {1 if args.device == 'cuda' else 0}}}",
    ]
    if args.device == "cpu":
        overrides.append("train.threads=1")
    cfg = load_config(None, overrides)
    return TrialSpec(trial_id=name, config=cfg.to_dict(), out_dir=str(root / name))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()

    import ray

    t = time.perf_counter()
    ensure_ray()
    ray_init = time.perf_counter() - t

    @ray.remote(num_cpus=1, num_gpus=1 if args.device == "cuda" else 0)
    def in_task(spec: dict) -> tuple[float, float]:
        t0 = time.perf_counter()
        result = run_trial(TrialSpec.from_dict(spec))
        return float(result.summary["startup_s"]), time.perf_counter() - t0

    @ray.remote(num_cpus=1, num_gpus=1 if args.device == "cuda" else 0)
    class Runner:
        def run(self, spec: dict) -> float:
            return float(run_trial(TrialSpec.from_dict(spec)).summary["startup_s"])

    runner = Runner.remote()  # type: ignore[attr-defined]
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for launcher in ("ray-train", "ray-task", "ray-actor", "in-process"):
            for i in range(args.repeats):
                spec = make_spec(root, f"{launcher}-{i}", args, launcher)
                t0 = time.perf_counter()
                if launcher == "ray-task":
                    startup, _ = ray.get(in_task.remote(spec.to_dict()))
                elif launcher == "ray-actor":
                    startup = ray.get(runner.run.remote(spec.to_dict()))
                else:
                    startup = float(run_trial(spec).summary["startup_s"])
                rows.append((launcher, i, startup, time.perf_counter() - t0))
                print(f"  {launcher} #{i}: first step after {startup:.2f} s", flush=True)

    print(
        f"\nray.init: {ray_init:.1f} s; device {args.device}; preset {args.preset}; {args.steps} steps per trial"
    )
    print(f"{'launcher':<12} {'run':>3} {'call->1st step s':>17} {'trial wall s':>13}")
    for launcher, i, startup, wall in rows:
        print(f"{launcher:<12} {i:>3} {startup:>17.2f} {wall:>13.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
