"""Training recipes as data: how each of a linear layer's three GEMMs quantizes its two operands (RECIPES.md).

Pure Python (no torch): `--dry-run` parses and checks them. `robustprec.numerics.recipe_linear` runs them.

A linear layer ``y = x Wᵀ`` (x: tokens × in, W: out × in) has three GEMMs, each contracting over its own
dimension, and every operand copy is quantized from the high-precision tensor with blocks along that dimension:

- ``fwd``   y  = x Wᵀ, over in-features: x by rows (per token), W by rows (per output channel);
- ``dgrad`` dx = g W, over out-features: g by rows (per token), W by columns (Wᵀ by rows);
- ``wgrad`` dW = gᵀ x, over tokens: gᵀ and xᵀ by rows (g and x by columns).

A `TrainingRecipe` names, for each of these six slots, an operand recipe spec of `recipe_spec` (or None: the slot
stays in the backend's base precision) and two per-slot tricks, stochastic rounding and Transformer Engine's
16×16 random Hadamard transform. Backend spec grammar: ``NAME[:key=value,...]``, keys per recipe (`RECIPES`) plus
``act=``, ``weight=``, ``grad=`` to change one operand's element format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from robustprec.numerics.recipe_spec import (
    MX_MODES,
    check_block_shape,
    choose,
    parse_flag,
    parse_knobs,
    parse_recipe,
)

__all__ = [
    "GEMMS",
    "RECIPES",
    "SLOTS",
    "OperandQuant",
    "TrainingRecipe",
    "check_linear",
    "is_training_recipe",
    "parse_training_recipe",
    "split_operand_formats",
]

GEMMS = ("fwd", "dgrad", "wgrad")
SLOTS = (("fwd", "act"), ("fwd", "weight"), ("dgrad", "grad"), ("dgrad", "weight"), ("wgrad", "grad"),
         ("wgrad", "act"))  # fmt: skip
OPERANDS = ("act", "weight", "grad")
_MX = {
    "e4m3": "mxfp8_e4m3",
    "e5m2": "mxfp8_e5m2",
    "e2m3": "mxfp6_e2m3",
    "e3m2": "mxfp6_e3m2",
    "e2m1": "mxfp4",
}
_MX_NAMES = {"mxfp8": "e4m3", "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2", "mxfp6_e2m3": "e2m3",
             "mxfp6_e3m2": "e3m2", "mxfp4": "e2m1"}  # fmt: skip
_FP8 = ("e4m3", "e5m2")

RECIPES: dict[str, str] = {
    "fp8_tensorwise": "torchao tensorwise: one FP32 scale max/amax per tensor; act, weight e4m3, grad e5m2; "
    "all three GEMMs in FP8 (keys pow2, act/weight/grad=e4m3|e5m2)",
    "fp8_rowwise": "torchao rowwise: power-of-two scales per row along each GEMM's K; all e4m3 (keys pow2, "
    "act/weight/grad)",
    "fp8_rowwise_gw_hp": "torchao rowwise_with_gw_hp: forward rowwise; dgrad: grad rowwise x weight tensorwise "
    "(e4m3, pow2); wgrad in base precision",
    "mxfp8": "OCP MX: blocks of 32 along K, E8M0 scales (scale=rceil|floor|ceil|even, default rceil); all e4m3 "
    "(grad=e5m2 for torchao's/TE's hybrid)",
    "mxfp6_e2m3": "MX blocks of 32, FP6 E2M3 elements for all operands (key scale)",
    "mxfp6_e3m2": "MX blocks of 32, FP6 E3M2 elements for all operands (key scale)",
    "mxfp4": "MX blocks of 32, FP4 E2M1 elements for all operands (key scale)",
    "nvfp4": "Transformer Engine NVFP4: E2M1, 16-element blocks with E4M3 scales and an FP32 tensor scale; "
    "weight 16x16 blocks (weight2d), grad stochastic rounding (sr), 16x16 random Hadamard transform of the "
    "wgrad operands (rht); each true|false",
    "fp8_block": "DeepSeek-V3 / TE blockwise: e4m3, 1x128 act and grad tiles, 128x128 weight blocks, FP32 "
    "scales (pow2=true for power-of-two scales)",
}
_KEYS = {"fp8_tensorwise": ("pow2",), "fp8_rowwise": ("pow2",), "fp8_rowwise_gw_hp": ("pow2",),
         "nvfp4": ("sr", "rht", "weight2d"), "fp8_block": ("pow2",)}  # fmt: skip


@dataclass(frozen=True)
class OperandQuant:
    """One slot's quantization: a `recipe_spec` operand recipe, stochastic rounding, Hadamard transform."""

    recipe: str
    stochastic: bool = False
    rht: bool = False


Slot = OperandQuant | None


@dataclass(frozen=True)
class TrainingRecipe:
    """Six slots in `SLOTS` order (None: base precision) and the canonical spec string."""

    name: str
    slots: tuple[Slot, Slot, Slot, Slot, Slot, Slot]

    def slot(self, gemm: str, operand: str) -> Slot:
        return self.slots[SLOTS.index((gemm, operand))]

    def with_high_wgrad(self) -> TrainingRecipe:
        """The same recipe with the wgrad GEMM in base precision (``numerics.wgrad: high``)."""
        return replace(self, slots=(*self.slots[:4], None, None))


KIND = "recipe backend"  # this module's errors start "bad recipe backend 'sim:...': ..."


def _base_name(spec: str) -> str:
    return spec.strip().partition(":")[0].strip().lower()


def is_training_recipe(spec: str) -> bool:
    """Whether `spec` (without ``sim:``) names a training recipe (options not checked)."""
    return _base_name(spec) in RECIPES or _base_name(spec) in _MX_NAMES


def _options(spec: str, name: str, text: str) -> dict[str, str]:
    valid = (*(("scale",) if name in _MX_NAMES else _KEYS[name]), *OPERANDS)
    return parse_knobs(spec, name, text, valid, KIND)


def _choice(spec: str, key: str, value: str, valid: tuple[str, ...]) -> str:
    return choose(spec, key, value, valid, KIND)


def _flag(spec: str, opts: dict[str, str], key: str, default: bool) -> bool:
    return parse_flag(spec, key, opts.get(key), default, KIND)


def _elements(
    spec: str, opts: dict[str, str], defaults: dict[str, str], valid: tuple[str, ...]
) -> dict[str, str]:
    return {op: _choice(spec, op, opts.get(op, defaults[op]), valid) for op in OPERANDS}


def _same(q: dict[str, OperandQuant]) -> tuple[Slot, ...]:
    return tuple(q[op] for _, op in SLOTS)


def _mx(spec: str, name: str, opts: dict[str, str]) -> tuple[str, tuple[Slot, ...]]:
    mode = _choice(spec, "scale", opts.get("scale", "rceil"), MX_MODES)
    elem = _MX_NAMES[name]
    els = _elements(spec, opts, dict.fromkeys(OPERANDS, elem), tuple(_MX))
    q = {op: OperandQuant(f"{_MX[e]}:scale={mode}") for op, e in els.items()}
    base = "mxfp8" if name in ("mxfp8", "mxfp8_e4m3") else name
    return f"{base}:scale={mode}", _same(q)


def _fp8(spec: str, name: str, opts: dict[str, str]) -> tuple[str, tuple[Slot, ...]]:
    pow2 = _flag(spec, opts, "pow2", name != "fp8_tensorwise")
    defaults = {"act": "e4m3", "weight": "e4m3", "grad": "e5m2" if name == "fp8_tensorwise" else "e4m3"}
    els = _elements(spec, opts, defaults, _FP8)
    p = str(pow2).lower()
    kind = "fp8_tensorwise" if name == "fp8_tensorwise" else "fp8_rowwise"
    q = {op: OperandQuant(f"{kind}:elem={e},pow2={p}") for op, e in els.items()}
    slots = _same(q)
    if name == "fp8_rowwise_gw_hp":  # dgrad weight tensorwise, wgrad in base precision
        w_t = OperandQuant(f"fp8_tensorwise:elem={els['weight']},pow2={p}")
        slots = (*slots[:3], w_t, None, None)
    return f"{name}:pow2={p}", slots


def _block(spec: str, name: str, opts: dict[str, str]) -> tuple[str, tuple[Slot, ...]]:
    p = str(_flag(spec, opts, "pow2", False)).lower()
    els = _elements(spec, opts, dict.fromkeys(OPERANDS, "e4m3"), _FP8)
    q = {op: OperandQuant(f"fp8_block:tile={'128x128' if op == 'weight' else '1x128'},elem={e},pow2={p}")
         for op, e in els.items()}  # fmt: skip
    return f"fp8_block:pow2={p}", _same(q)


def _nvfp4(spec: str, name: str, opts: dict[str, str]) -> tuple[str, tuple[Slot, ...]]:
    sr, rht, w2d = (_flag(spec, opts, k, True) for k in ("sr", "rht", "weight2d"))
    _elements(spec, opts, dict.fromkeys(OPERANDS, "e2m1"), ("e2m1",))
    w = OperandQuant("nvfp4:tile=16x16" if w2d else "nvfp4")
    a, g = OperandQuant("nvfp4"), OperandQuant("nvfp4", stochastic=sr)
    slots = (a, w, g, w, replace(g, rht=rht), replace(a, rht=rht))
    return f"nvfp4:sr={str(sr).lower()},rht={str(rht).lower()},weight2d={str(w2d).lower()}", slots


_BUILDERS = {"fp8_tensorwise": _fp8, "fp8_rowwise": _fp8, "fp8_rowwise_gw_hp": _fp8, "nvfp4": _nvfp4,
             "fp8_block": _block}  # fmt: skip


def parse_training_recipe(spec: str) -> TrainingRecipe:
    """Parse a recipe backend spec (without ``sim:``); one-line ValueError naming the valid choices."""
    raw, _, text = spec.strip().partition(":")
    name = raw.strip().lower()
    if name not in RECIPES and name not in _MX_NAMES:
        raise ValueError(f"unknown recipe {raw.strip()!r}; valid recipes: {', '.join(RECIPES)}")
    opts = _options(spec, name, text)
    canonical, slots = (_mx if name in _MX_NAMES else _BUILDERS[name])(spec, name, opts)
    extra = [f"{op}={opts[op]}" for op in OPERANDS if op in opts]
    full = canonical + ("," + ",".join(extra) if extra else "")
    for s in slots:  # every operand recipe must parse (it always does for the specs built above)
        if s is not None:
            parse_recipe(s.recipe)
    return TrainingRecipe(full, slots)  # type: ignore[arg-type]


_SHAPES = {  # slot -> (rows, K) of the 2-D operand, from (tokens, in, out)
    ("fwd", "act"): lambda t, i, o: (t, i), ("fwd", "weight"): lambda t, i, o: (o, i),
    ("dgrad", "grad"): lambda t, i, o: (t, o), ("dgrad", "weight"): lambda t, i, o: (i, o),
    ("wgrad", "grad"): lambda t, i, o: (o, t), ("wgrad", "act"): lambda t, i, o: (i, t),
}  # fmt: skip


def check_linear(
    recipe: TrainingRecipe, in_features: int, out_features: int, tokens: int | None = None
) -> None:
    """Raise a one-line ValueError if a slot's blocks do not divide its operand (tokens None: not checked)."""
    for (gemm, op), s in zip(SLOTS, recipe.slots, strict=True):
        if s is None:
            continue
        t = 1 if tokens is None else tokens
        rows, k = _SHAPES[(gemm, op)](t, in_features, out_features)
        if tokens is None and op != "weight":
            if gemm == "wgrad":
                k = parse_recipe(s.recipe).k_multiple  # K is the token dimension: not known yet
            else:
                rows = parse_recipe(s.recipe).row_multiple
        try:
            check_block_shape(s.recipe, (rows, k))
        except ValueError as e:
            raise ValueError(
                f"{recipe.name}: linear in={in_features}, out={out_features}, tokens={tokens or '?'}: {gemm} {op} "
                f"operand ({rows}x{k}): {e}"
            ) from None


def split_operand_formats(spec: str) -> tuple[str, dict[str, str]]:
    """An ExMy backend spec with ``act=``/``weight=``/``grad=`` knobs: (base spec, {operand: format spec}).

    The per-operand value replaces the element format (e.g. ``E5M2``, ``fp8_e5m2``); the other knobs apply to
    every operand: ``E4M3:rounding=stochastic,grad=E5M2`` gives grad ``E5M2:rounding=stochastic``.
    """
    name, _, text = spec.strip().partition(":")
    knobs, per = [], {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = (s.strip() for s in item.partition("="))
        if key.lower() in OPERANDS:
            if ":" in value or not value:
                raise ValueError(f"{key}={value!r}: give an element format without knobs (e.g. {key}=E5M2)")
            per[key.lower()] = value
        else:
            knobs.append(item)
    rest = ("," + ",".join(knobs)) if knobs else ""
    base = name + (":" + rest[1:] if knobs else "")
    return base, {op: v + (":" + rest[1:] if knobs else "") for op, v in per.items()}
