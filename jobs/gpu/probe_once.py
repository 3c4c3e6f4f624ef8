"""One compile probe per process (session 10): the compiled-vs-eager error of the trainer's probe for each backend
given, nothing else, so that a loop of fresh processes with fresh Inductor cache directories samples how often
Inductor's compile of it is wrong (sim:mxfp8 and sim:mxfp4 with base bf16 were wrong in some processes and right
in others on an H200, s10_2 and s10_5).

    TORCHINDUCTOR_CACHE_DIR=/tmp/ind1 python3 jobs/gpu/probe_once.py sim:mxfp8
"""

from __future__ import annotations

import sys

import torch

from robustprec.config import load_config
from robustprec.numerics import compile_check
from robustprec.numerics.backends import make_backend


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for backend in sys.argv[1:]:
        numerics = load_config(None, [f"numerics.backend={backend}", "numerics.exclude=[]"]).numerics
        err = compile_check.compiled_gradient_error(
            lambda m, numerics=numerics: make_backend(numerics, dev).wrap(m, seed=0), dev
        )
        print(f"{backend}: {'WRONG' if err > compile_check.TOLERANCE else 'right'} {err:.3g}", flush=True)


if __name__ == "__main__":
    main()
