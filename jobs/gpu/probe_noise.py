"""Is a failing compile probe on CUDA a miscompile or rounding noise (session 10, sim:mxfp4 at 0.095)? The probe's
weight gradients under four executions: CUDA compiled by Inductor, CUDA under aot_eager (dynamo and AOT autograd
without Inductor), CUDA eager and CPU eager. Prints each pair's error as the probe measures it (‖a − b‖ / ‖b‖,
largest over the two weights) and how many gradient entries differ. CUDA eager against CPU eager is the noise
floor of two correct executions.

    python3 jobs/gpu/probe_noise.py sim:mxfp4 sim:nvfp4 sim:mxfp4:base=fp32
"""

from __future__ import annotations

import sys
import time

import torch

from robustprec.config import load_config
from robustprec.numerics import compile_check
from robustprec.numerics.backends import make_backend


def grads(backend: str, device: str, compiler: str | None) -> list[torch.Tensor]:
    spec, _, base = backend.partition(":base=")
    sets = [f"numerics.backend={spec}", "numerics.exclude=[]"] + ([f"numerics.base={base}"] if base else [])
    numerics = load_config(None, sets).numerics
    dev = torch.device(device)
    torch._dynamo.reset()
    return [g.cpu() for g in compile_check._weight_grads(lambda m: make_backend(numerics, dev).wrap(m, seed=0),
                                                         dev, compiler)]  # fmt: skip


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    pairs = [("inductor", "cuda eager"), ("aot_eager", "cuda eager"), ("cuda eager", "cpu eager"),
             ("inductor", "cpu eager")]  # fmt: skip
    for backend in sys.argv[1:]:
        t0 = time.perf_counter()
        runs = {"inductor": grads(backend, "cuda", "inductor"), "aot_eager": grads(backend, "cuda", "aot_eager"),
                "cuda eager": grads(backend, "cuda", None), "cpu eager": grads(backend, "cpu", None)}  # fmt: skip
        cells = []
        for a, b in pairs:
            err = max(compile_check._relative(x, y) for x, y in zip(runs[a], runs[b], strict=True))
            differ = sum(
                int((compile_check._difference(x, y) > 0).sum())
                for x, y in zip(runs[a], runs[b], strict=True)
            )
            cells.append(f"{a} vs {b}: {err:.3g} ({differ} entries)")
        print(f"{backend}: " + "; ".join(cells) + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        for i, (c, e) in enumerate(zip(runs["inductor"], runs["cuda eager"], strict=True)):
            ratio = (c / e)[e != 0]
            print(f"  weight {i}: error {compile_check._relative(c, e):.3g}, compiled / eager median "
                  f"{ratio.median().item():.4g}, quartiles {ratio.quantile(0.25).item():.4g} "
                  f"{ratio.quantile(0.75).item():.4g}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
