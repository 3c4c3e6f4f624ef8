"""Why does the compile probe fail on CUDA (session 9)? The trainer's probe per backend under variants: the
activation between its linears (relu, gelu), the counters (on, off), Inductor's mix-order reductions (on, off)
and the probe's tokens. Prints one line per variant: the compiled-vs-eager gradient error, or the compiler's last
words. A variant is BACKEND/ACT/COUNTING/MIX_ORDER/TOKENS:

    python3 jobs/gpu/probe_diag.py sim:mxfp8/relu/1/0/128 sim:nvfp4/gelu/1/1/2048
"""

from __future__ import annotations

import sys
import time

import torch
import torch._inductor.config as inductor_config
from torch import nn

from robustprec.config import load_config
from robustprec.numerics import compile_check
from robustprec.numerics.backends import make_backend

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ACTS = {"relu": torch.relu, "gelu": lambda x: nn.functional.gelu(x, approximate="tanh")}


def variant(backend: str, act: str, counting: bool, mix_order: bool, tokens: int) -> str:
    compile_check.PROBE_TOKENS = tokens
    compile_check._Probe.forward = lambda self, x: self.fc2(ACTS[act](self.fc1(x)))
    inductor_config.triton.mix_order_reduction = mix_order
    numerics = load_config(None, [f"numerics.backend={backend}", "numerics.exclude=[]"]).numerics

    def prepare(model: nn.Module) -> nn.Module:
        be = make_backend(numerics, DEV)
        wrapped = be.wrap(model, seed=0)
        be.count_numerics(counting)
        return wrapped

    try:
        return f"error {compile_check.compiled_gradient_error(prepare, DEV):.3g}"
    except Exception as e:  # the diagnosis is the message
        return f"failed: {compile_check.compiler_message(e)}"


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", flush=True)
    for spec in sys.argv[1:]:
        backend, act, counting, mix, tokens = spec.split("/")
        t0 = time.perf_counter()
        out = variant(backend, act, counting == "1", mix == "1", int(tokens))
        print(f"{spec}: {out} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
