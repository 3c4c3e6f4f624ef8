"""Which fusion gets sim:mxfp8 wrong on CUDA (session 10)? Alone, every stage of the MX quantizer compiles right
(s10_3, jobs/gpu/mx_diag.py); in the probe and in one graph of many recipes it does not (s10_2). Here: groups of
recipe operands in one compiled graph (the same x, and x with its transpose as backward quantizes it), under
Inductor's defaults and with one option changed; and the trainer's compile probe for sim:mxfp8 likewise. Prints
the cases whose values differ from eager.

    python3 jobs/gpu/mx_fusion_diag.py
"""

from __future__ import annotations

import time

import torch
import torch._inductor.config as inductor_config

from robustprec.config import load_config
from robustprec.numerics import compile_check
from robustprec.numerics import recipes as r
from robustprec.numerics.backends import make_backend

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GROUPS = {
    "mxfp8 + mxfp4": [("mxfp8", False), ("mxfp4", False)],
    "mxfp8 x and x.t()": [("mxfp8", False), ("mxfp8", True)],
    "mxfp4 x and x.t()": [("mxfp4", False), ("mxfp4", True)],
    "mxfp8 + fp8_tensorwise": [("mxfp8", False), ("fp8_tensorwise", False)],
    "mxfp8 + fp8_rowwise": [("mxfp8", False), ("fp8_rowwise", False)],
}
VARIANTS = {
    "defaults": {},
    "mix_order_reduction off": {"triton.mix_order_reduction": False},
    "split_reductions off": {"split_reductions": False},
    "emulate_precision_casts": {"emulate_precision_casts": True},
}


def group_error(cases: list[tuple[str, bool]], x: torch.Tensor) -> str:
    plans = [r.recipe_plan(spec) for spec, _ in cases]

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [
            r.recipe_operand(x.t() if t else x, p, stats=True)[0]
            for p, (_, t) in zip(plans, cases, strict=True)
        ]

    want = run(x)
    torch._dynamo.reset()
    got = torch.compile(run, fullgraph=True, dynamic=False)(x)
    bad = [f"{c[0]}{'.t' if c[1] else ''}: {int((g != w).sum())}" for c, g, w in zip(cases, got, want, strict=True)
           if not torch.equal(g, w)]  # fmt: skip
    return ", ".join(bad) or "right"


def probe_error(backend: str) -> str:
    numerics = load_config(None, [f"numerics.backend={backend}", "numerics.exclude=[]"]).numerics
    err = compile_check.compiled_gradient_error(lambda m: make_backend(numerics, DEV).wrap(m, seed=0), DEV)
    return f"{err:.3g}"


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", flush=True)
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(512, 256, generator=gen) * torch.exp(2 * torch.randn(512, 256, generator=gen))).to(DEV)
    for variant, patch in VARIANTS.items():
        t0 = time.perf_counter()
        with inductor_config.patch(patch):
            print(f"{variant}: probe sim:mxfp8 {probe_error('sim:mxfp8')}, sim:mxfp4 {probe_error('sim:mxfp4')}",
                  flush=True)  # fmt: skip
            for name, cases in GROUPS.items():
                print(f"  {name}: {group_error(cases, x)}", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
