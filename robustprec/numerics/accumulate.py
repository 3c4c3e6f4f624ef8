"""Limited-precision GEMM accumulation (`numerics.accumulate`, e.g. ``"E8M13:chunk=128"``; sim backends only).

**What it models.** Hopper's FP8 tensor cores keep about 14 significant bits in their accumulator, and
DeepSeek-V3's fine-grained FP8 GEMM promotes the partial sum to an FP32 accumulator every 128 elements of K
(DeepSeek-V3 report §3.3.2; ``../shared/RECIPES.md``). A simulated GEMM with an accumulator splits its
contraction dimension K into chunks of `chunk`; within a chunk the partial sum is held in the accumulator format
(rounded to it after every `step` elements of K: once per chunk by default, or at the granularity of one MMA
instruction with e.g. ``step=32``), and each chunk's result is added into a float32 accumulator. Recipes whose
scales change along K (``fp8_block``'s 1×128 tiles) also promote at every scale block, as the hardware must.

**What it does not model.** Rounding after each individual product addition and the alignment of products to
the largest exponent inside the tensor core (the hardware's exact, undocumented behaviour): the sum within one
`step` is float32's. With ``rounding=truncate`` the accumulator rounds toward zero (closer to the hardware's
right shifts); the default is round-to-nearest-even. Spec: ``<format>:chunk=N[,step=S][,<format knob>=...]``,
the format any ``E{e}M{m}`` of `robustprec.numerics.formats` (E8M13: 14 significant bits, float32's range).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.quantize import QuantPlan, quant_plan, quantize_values

__all__ = ["Accumulator", "accumulated_mm", "parse_accumulator"]

_OWN_KNOBS = ("chunk", "step")


@dataclass(frozen=True)
class Accumulator:
    """The accumulator format, the promotion interval `chunk` and the rounding interval `step` (both along K)."""

    fmt: FloatFormat
    chunk: int
    step: int
    plan: QuantPlan = field(init=False, repr=False, compare=False)  # computed once, on the host

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", quant_plan(self.fmt))

    @property
    def spec(self) -> str:
        step = f",step={self.step}" if self.step != self.chunk else ""
        sep = "," if ":" in self.fmt.spec else ":"
        return f"{self.fmt.spec}{sep}chunk={self.chunk}{step}"


def _positive_int(key: str, value: str, spec: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{key} must be a positive integer in {spec!r}; got {value!r}")
    return int(value)


def parse_accumulator(spec: str) -> Accumulator:
    """``<format>:chunk=N[,step=S][,knob=value...]``; raises ValueError with the valid choices."""
    base, _, knob_str = spec.strip().partition(":")
    own: dict[str, int] = {}
    rest = []
    for item in filter(None, (s.strip() for s in knob_str.split(","))):
        key, _, value = (s.strip() for s in item.partition("="))
        if key.lower() in _OWN_KNOBS:
            own[key.lower()] = _positive_int(key.lower(), value, spec)
        else:
            rest.append(item)
    if "chunk" not in own:
        raise ValueError(
            f"accumulator {spec!r} needs chunk=N (K elements between promotions to float32, e.g. E8M13:chunk=128); "
            "optional: step=S (K elements between roundings, dividing N) and the format's knobs"
        )
    fmt = parse_format(base + (":" + ",".join(rest) if rest else ""))
    if fmt.scaling != "none" or fmt.block_size:
        raise ValueError(f"an accumulator format is not scaled; got {spec!r}")
    chunk = own["chunk"]
    step = own.get("step", chunk)
    if chunk % step:
        raise ValueError(f"step ({step}) must divide chunk ({chunk}) in {spec!r}")
    return Accumulator(fmt, chunk, step)


def accumulated_mm(
    a: Tensor, b: Tensor, acc: Accumulator | None, mm: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """a @ b (2-D) with the accumulator `acc` along K (None: the plain GEMM); `mm` multiplies (float32 output)."""
    if acc is None:
        return mm(a, b)
    k = a.shape[1]
    out: Tensor | None = None
    for c0 in range(0, k, acc.chunk):
        part: Tensor | None = None
        for s0 in range(c0, min(c0 + acc.chunk, k), acc.step):
            s1 = min(s0 + acc.step, k)
            p = mm(a[:, s0:s1], b[s0:s1])
            part = quantize_values(p if part is None else part + p, acc.plan)[0]
        out = part if out is None else out + part
    return out if out is not None else mm(a, b)  # K = 0
