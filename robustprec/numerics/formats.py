"""Reduced-precision floating-point formats `E{e}M{m}` and their string specs (METHODS §1).

A format has 1 sign bit, `e` exponent bits (bias `2^(e-1) - 1`) and `m` explicit mantissa bits. Knobs:

- ``special``: ``ieee`` (top exponent code reserved for Inf/NaN), ``fn`` (OCP "finite": only the all-ones code
  is NaN, no Inf; E4M3fn max = 448) or ``finite`` (no Inf, no NaN: every code is a finite number, as in the
  ml_dtypes float6/float4 formats).
- ``subnormals``: ``true`` (gradual underflow) or ``false`` (the value set is {0} ∪ normals).
- ``overflow``: ``inf`` (ieee only), ``saturate`` (clamp to ±max) or ``nan`` (fn only, OCP non-saturating mode).
  Overflow means the correctly rounded magnitude (with an unbounded exponent) exceeds max; an Inf input is
  treated as an overflow. Defaults: ``inf`` for ieee (as torch's bf16/fp16/float8_e5m2 casts); ``saturate`` for
  fn and finite. Measured: the ml_dtypes float6/float4 casts saturate (Inf included), and so does torch 2.13's
  CPU ``float8_e4m3fn`` cast; torch 2.11 (CPU and CUDA) and ml_dtypes ``float8_e4m3fn`` instead return NaN for
  overflow and Inf, which ``fp8_e4m3:overflow=nan`` reproduces bit for bit. Saturation is the default because it
  is also what FP8 training recipes do when casting.
- ``rounding``: ``nearest`` (half to even), ``truncate`` (toward zero) or ``stochastic``.
- ``scaling``: ``none``, ``tensor`` (power-of-two per-tensor scale) or ``block:N`` (power-of-two scale per N
  contiguous elements of the last dimension, MX-style).

Spec syntax: ``E4M3``, ``e8m3``, ``bf16``, ``fp8_e4m3``, ``E5M2:overflow=saturate,rounding=stochastic``,
``E4M3:scaling=block:32``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, fields

import torch

__all__ = ["ALIASES", "FloatFormat", "format_table", "parse_format", "value_set"]

EXP_BITS_RANGE = (2, 8)
MAN_BITS_RANGE = (0, 23)
SPECIALS = ("ieee", "fn", "finite")
OVERFLOWS = ("inf", "saturate", "nan")
ROUNDINGS = ("nearest", "truncate", "stochastic")
KNOBS = ("special", "subnormals", "overflow", "rounding", "scaling")
_OVERFLOW_BY_SPECIAL = {"ieee": ("inf", "saturate"), "fn": ("saturate", "nan"), "finite": ("saturate",)}
_DEFAULT_OVERFLOW = {"ieee": "inf", "fn": "saturate", "finite": "saturate"}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_MAX_VALUE_SET_CODES = 1 << 24

ALIASES: dict[str, str] = {
    "fp32": "E8M23",
    "tf32": "E8M10",
    "bf16": "E8M7",
    "fp16": "E5M10",
    "fp8_e5m2": "E5M2",
    "fp8_e4m3": "E4M3:special=fn",
    "float6_e2m3fn": "E2M3:special=finite",
    "float6_e3m2fn": "E3M2:special=finite",
    "float4_e2m1fn": "E2M1:special=finite",
}

_GENERIC_RE = re.compile(r"e(\d+)m(\d+)", re.IGNORECASE)


def _valid_scaling(scaling: str) -> bool:
    if scaling in ("none", "tensor"):
        return True
    kind, _, n = scaling.partition(":")
    return kind == "block" and n.isdigit() and int(n) >= 1 and str(int(n)) == n


@dataclass(frozen=True)
class FloatFormat:
    """A simulated floating-point format. Construct via `parse_format` or directly (fields are validated).

    `overflow=None` selects the default for `special`; `name` is a label (an alias or ``E{e}M{m}``) that is not
    part of equality.
    """

    exp_bits: int
    man_bits: int
    special: str = "ieee"
    subnormals: bool = True
    overflow: str | None = None
    rounding: str = "nearest"
    scaling: str = "none"
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        e, m = self.exp_bits, self.man_bits
        lo, hi = EXP_BITS_RANGE
        if not isinstance(e, int) or not lo <= e <= hi:
            raise ValueError(f"exponent bits must be in [{lo}, {hi}], got {e!r}")
        lo, hi = MAN_BITS_RANGE
        if not isinstance(m, int) or not lo <= m <= hi:
            raise ValueError(f"mantissa bits must be in [{lo}, {hi}], got {m!r}")
        if self.special not in SPECIALS:
            raise ValueError(f"special must be one of {', '.join(SPECIALS)}; got {self.special!r}")
        if self.special != "ieee" and e == 8:
            raise ValueError(
                f"special={self.special} needs exponent bits in [2, 7]: with 8 its largest value exceeds float32"
            )
        if not isinstance(self.subnormals, bool):
            raise ValueError(f"subnormals must be true or false; got {self.subnormals!r}")
        if self.overflow is None:
            object.__setattr__(self, "overflow", _DEFAULT_OVERFLOW[self.special])
        allowed = _OVERFLOW_BY_SPECIAL[self.special]
        if self.overflow not in allowed:
            raise ValueError(
                f"overflow={self.overflow!r} is not valid for special={self.special}; valid: {', '.join(allowed)}"
            )
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}")
        if not isinstance(self.scaling, str) or not _valid_scaling(self.scaling):
            raise ValueError(
                f"scaling must be none, tensor or block:N with an integer N >= 1; got {self.scaling!r}"
            )
        generic = f"E{e}M{m}"
        if not self.name:
            object.__setattr__(self, "name", generic)
        elif self.name != generic:
            base = ALIASES.get(self.name)
            if base is None or (not base.startswith(generic + ":") and base != generic):
                raise ValueError(f"name {self.name!r} must be {generic!r} or an alias of it")

    # ----- derived numbers -------------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Total storage bits (sign + exponent + mantissa)."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        """Exponent bias, 2^(e-1) - 1."""
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def min_exp(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def _max_code(self) -> tuple[int, int]:
        """(exponent field, mantissa field) of the largest finite code."""
        e, m = self.exp_bits, self.man_bits
        top, full = (1 << e) - 1, (1 << m) - 1
        if self.special == "ieee":
            return top - 1, full
        if self.special == "fn":
            return (top, full - 1) if m >= 1 else (top - 1, 0)
        return top, full

    @property
    def max_exp(self) -> int:
        """Unbiased exponent of the binade holding the largest finite number."""
        return self._max_code[0] - self.bias

    @property
    def max_normal(self) -> float:
        """Largest finite value."""
        _, mant = self._max_code
        return float((1.0 + mant / (1 << self.man_bits)) * 2.0**self.max_exp)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, 2^min_exp."""
        return float(2.0**self.min_exp)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (2^(min_exp - m); equals min_normal when subnormals are disabled or m = 0)."""
        if not self.subnormals:
            return self.min_normal
        return float(2.0 ** (self.min_exp - self.man_bits))

    @property
    def epsilon(self) -> float:
        """Spacing of values in [1, 2): 2^-m."""
        return float(2.0**-self.man_bits)

    @property
    def max_scale_exp(self) -> int:
        """Largest up-scaling exponent k of `scaling`: the smallest scaled-back value, 2^(min_exp - m - k), stays a
        multiple of bfloat16's smallest subnormal 2^-133 (formats with m <= 7) or float32's 2^-149, so every
        dequantized value is exact in that dtype. Only tensors or blocks with a tiny amax reach the limit."""
        floor = -133 if self.man_bits <= 7 else -149
        return self.min_exp - self.man_bits - floor

    @property
    def block_size(self) -> int | None:
        """N for ``scaling=block:N``, else None."""
        return int(self.scaling.split(":")[1]) if self.scaling.startswith("block:") else None

    # ----- strings -------------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """Canonical spec string; `parse_format(fmt.spec) == fmt` (and keeps `name`)."""
        base = parse_format(self.name)
        changes = {
            k: getattr(self, k) for k in KNOBS if k != "overflow" and getattr(self, k) != getattr(base, k)
        }
        if base.replace(**changes).overflow != self.overflow:  # overflow's default follows special
            changes["overflow"] = self.overflow
        knobs = [f"{k}={str(changes[k]).lower()}" for k in KNOBS if k in changes]
        return self.name + (":" + ",".join(knobs) if knobs else "")

    def __str__(self) -> str:
        return self.spec

    def replace(self, **changes: object) -> FloatFormat:
        """Copy with some fields changed (overflow is re-derived from special unless given)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        if "special" in changes and "overflow" not in changes:
            kw["overflow"] = None
        if ("exp_bits" in changes or "man_bits" in changes) and "name" not in changes:
            kw["name"] = ""
        kw.update(changes)
        return FloatFormat(**kw)  # type: ignore[arg-type]


def _parse_bool(value: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"subnormals must be true or false; got {value!r}")


@functools.lru_cache(maxsize=256)
def parse_format(spec: str) -> FloatFormat:
    """Parse ``E{e}M{m}`` or an alias, optionally followed by ``:knob=value,...``; raises ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty format spec; expected E{e}M{m} (e in [2, 8], m in [0, 23]) or an alias")
    base, sep, knob_str = spec.strip().partition(":")
    base = base.strip()
    if base.lower() in ALIASES:
        alias = base.lower()
        fmt = parse_format(ALIASES[alias])
        fmt = FloatFormat(**{**_field_dict(fmt), "name": alias})
    else:
        match = _GENERIC_RE.fullmatch(base)
        if match is None:
            raise ValueError(
                f"unknown format {base!r}; expected E{{e}}M{{m}} with e in [{EXP_BITS_RANGE[0]}, {EXP_BITS_RANGE[1]}] "
                f"and m in [{MAN_BITS_RANGE[0]}, {MAN_BITS_RANGE[1]}], or one of the aliases: {', '.join(ALIASES)}"
            )
        fmt = FloatFormat(int(match.group(1)), int(match.group(2)))
    if not sep:
        return fmt
    changes: dict[str, object] = {}
    for item in knob_str.split(","):
        key, eq, value = (s.strip() for s in item.partition("="))
        key = key.lower()
        if key not in KNOBS or not eq:
            raise ValueError(
                f"bad knob {item.strip()!r} in {spec!r}; valid knobs: {', '.join(KNOBS)} (as knob=value)"
            )
        if key in changes:
            raise ValueError(f"knob {key!r} given twice in {spec!r}")
        value = value.lower()
        changes[key] = _parse_bool(value) if key == "subnormals" else value
    return fmt.replace(**changes)


def _field_dict(fmt: FloatFormat) -> dict[str, object]:
    return {f.name: getattr(fmt, f.name) for f in fields(fmt)}


def value_set(fmt: FloatFormat | str) -> torch.Tensor:
    """All finite non-negative values of `fmt` (float64, sorted ascending, 0 first; subnormals if enabled)."""
    fmt = parse_format(fmt) if isinstance(fmt, str) else fmt
    e, m = fmt.exp_bits, fmt.man_bits
    if 1 << (e + m) > _MAX_VALUE_SET_CODES:
        raise ValueError(f"{fmt.name} has too many values to enumerate (e + m must be <= 24)")
    codes = torch.arange(1 << (e + m), dtype=torch.int64)
    exp_field, mant = codes >> m, codes & ((1 << m) - 1)
    top_e, top_m = fmt._max_code
    keep = (exp_field < top_e) | ((exp_field == top_e) & (mant <= top_m))
    if not fmt.subnormals:
        keep &= (exp_field > 0) | (mant == 0)
    # value = (implicit bit * 2^m + mant) * 2^(max(exp_field, 1) - bias - m), built exactly in float64.
    sig = (mant + ((exp_field > 0).to(torch.int64) << m)).to(torch.float64)
    scale_exp = exp_field.clamp(min=1) - fmt.bias - m
    scale = ((scale_exp + 1023) << 52).view(torch.float64)
    return (sig * scale)[keep]


def format_table() -> list[dict[str, object]]:
    """One row per alias: name, spec, exp_bits, man_bits, special, max_normal, min_normal, min_subnormal, epsilon."""
    rows = []
    for alias in ALIASES:
        f = parse_format(alias)
        rows.append(
            {
                "name": alias,
                "spec": ALIASES[alias],
                "exp_bits": f.exp_bits,
                "man_bits": f.man_bits,
                "special": f.special,
                "max_normal": f.max_normal,
                "min_normal": f.min_normal,
                "min_subnormal": f.min_subnormal,
                "epsilon": f.epsilon,
            }
        )
    return rows
