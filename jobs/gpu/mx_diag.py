"""Where does Inductor get sim:mxfp8's operand wrong on CUDA (session 10: compiled != eager for mxfp8 and mxfp8_e5m2,
right for mxfp4)? Each stage of the MX quantizer compiled alone on eager's inputs, plus candidate rewrites of the
power of two and the rceil exponent. Prints, per stage, the entries that differ from eager and the first of them.

    python3 jobs/gpu/mx_diag.py mxfp8 mxfp4
"""

from __future__ import annotations

import sys

import torch
import torch._inductor.config as inductor_config

from robustprec.numerics import recipes as r
from robustprec.numerics.quantize import quantize_values

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def exp2_split(k: torch.Tensor) -> torch.Tensor:
    """2^k for k in [-149, 127]: two int32-built normal powers of two multiplied (exact)."""
    a = k.to(torch.int32) // 2
    b = k.to(torch.int32) - a
    return ((a + 127) << 23).view(torch.float32) * ((b + 127) << 23).view(torch.float32)


def exp2_ldexp(k: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(torch.ones_like(k, dtype=torch.float32), k.to(torch.int32))


def rceil_bits(amax: torch.Tensor, max_normal: float) -> torch.Tensor:
    descale = amax / max_normal
    bits = descale.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127 + ((bits & 0x7FFFFF) > 0).to(torch.int32)
    return torch.where(descale > 0, e, r._E8M0_MIN - 1)


def report(name: str, fn, *args) -> None:
    want = fn(*args)
    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True, dynamic=False)(*args)
    w, g = want.float().flatten().cpu(), got.float().flatten().cpu()
    bad = ~((w == g) | (w.isnan() & g.isnan()))
    line = f"  {name}: {int(bad.sum())} of {bad.numel()} differ"
    if bad.any():
        i = int(bad.nonzero()[0])
        line += f"; first at {i}: eager {w[i].item()!r} compiled {g[i].item()!r}"
    print(line, flush=True)


def diagnose(spec: str, x: torch.Tensor) -> None:
    p = r.recipe_plan(spec)
    print(spec, flush=True)
    xt = r._tiles(x, p.recipe.block)
    amax = r._amax(xt)
    e_raw = r._mx_exponent(amax, p.fmt, "rceil")
    e = e_raw.clamp(r._E8M0_MIN, -r._E8M0_MIN)
    scaled = xt * torch.where(e == r._E8M0_MIN, 1.0, r._exp2(-e))
    report("amax", r._amax, xt)
    report("rceil exponent (frexp)", lambda a: r._mx_exponent(a, p.fmt, "rceil"), amax)
    report("rceil exponent (bits)", lambda a: rceil_bits(a, p.fmt.max_normal), amax)
    report("exp2 (int64 -> float64)", r._exp2, -e)
    report("exp2 (two int32 halves)", exp2_split, -e)
    report("exp2 (ldexp)", exp2_ldexp, -e)
    report("scaled", lambda t, k: t * torch.where(k == r._E8M0_MIN, 1.0, r._exp2(-k)), xt, e)
    report("elements", lambda s: quantize_values(s, p.plan)[0], scaled)
    report(
        "amax..scaled",
        lambda t: t * r._exp2(-r._mx_exponent(r._amax(t), p.fmt, "rceil").clamp(-127, 127)),
        xt,
    )
    report("recipe_operand", lambda t: r.recipe_operand(t, p)[0], x)
    report("recipe_operand, counters", lambda t: r.recipe_operand(t, p, stats=True)[2], x)


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", flush=True)
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(512, 256, generator=gen) * torch.exp(2 * torch.randn(512, 256, generator=gen))).to(DEV)
    for spec in sys.argv[1:]:
        diagnose(spec, x)
        with inductor_config.patch(emulate_precision_casts=True):
            print("  with emulate_precision_casts:", flush=True)
            plan = r.recipe_plan(spec)
            report("recipe_operand", lambda t, plan=plan: r.recipe_operand(t, plan)[0], x)


if __name__ == "__main__":
    main()
