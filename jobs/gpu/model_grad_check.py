"""Compiled against eager on a real model (session 10): one micro-batch through a preset under a backend, its
parameter gradients eager (`torch.compiler.set_stance("force_eager")`) and compiled, as the trainer compiles it.
Prints the largest ‖compiled − eager‖ / ‖eager‖ over parameters and the error of all gradients together: the noise
of a correct compile (bf16, sim:E4M3) against a wrong one (Inductor's MX fault, docs/recipes.md), to set a
tolerance for a first-step check in the trainer. Stochastic rounding draws differently in the two passes: use
round-to-nearest backends. A backend may end in ``:base=fp32|bf16``.

    python3 jobs/gpu/model_grad_check.py llama-20m blocks bf16 sim:E4M3:base=bf16 sim:mxfp8
"""

from __future__ import annotations

import sys
import time

import torch

from robustprec.config import load_config
from robustprec.model.transformer import build_model
from robustprec.numerics.backends import make_backend
from robustprec.train.evaluation import to_batch
from robustprec.train.run import _load_data, compile_in_place


def grads(cfg, device: torch.device, eager: bool) -> list[torch.Tensor]:
    _, _, rows, spec = _load_data(cfg)
    model = build_model(spec, seed=0).to(device)
    run = make_backend(cfg.numerics, device).wrap(model, seed=0)
    torch._dynamo.reset()
    compile_in_place(model, cfg.train.compile_scope)
    x, y = to_batch(rows[: cfg.train.micro_batch_size], device)
    with torch.compiler.set_stance("force_eager" if eager else "default"):
        run(x, y)["loss"].backward()
    return [p.grad.detach().double() for p in model.parameters() if p.grad is not None]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (b.norm() or 1.0))


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset, scope, backends = sys.argv[1], sys.argv[2], sys.argv[3:]
    print(torch.__version__, torch.cuda.get_device_name() if device.type == "cuda" else "cpu", flush=True)
    for backend in backends:
        t0 = time.perf_counter()
        spec, _, base = backend.partition(":base=")
        sets = [f"model.preset={preset}", f"numerics.backend={spec}", f"train.compile_scope={scope}",
                f"numerics.base={base or 'auto'}",
                "train.seq_len=256", "train.micro_batch_size=8", "train.eval_sequences=8"]  # fmt: skip
        cfg = load_config(None, sets)
        e, c = grads(cfg, device, True), grads(cfg, device, False)
        worst = max(relative(ci, ei) for ci, ei in zip(c, e, strict=True))
        whole = relative(torch.cat([t.flatten() for t in c]), torch.cat([t.flatten() for t in e]))
        print(f"{preset} {scope} {backend}: largest per parameter {worst:.3g}, all gradients {whole:.3g} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
