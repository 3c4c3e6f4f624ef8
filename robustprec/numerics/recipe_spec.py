"""Low-precision training recipes' operand quantization as data, and their spec strings (RECIPES.md).

Pure Python (no torch): the config/plan layer calls `parse_recipe` and `check_block_shape` at ``--dry-run`` time;
`robustprec.numerics.recipes` implements the arithmetic.

A recipe quantizes one operand: elements in an ExMy format (a `robustprec.numerics.formats` spec string), grouped
in blocks that share one scale, the scale computed from the block's amax by a rule. Blocks run along the last
dimension of the operand (the GEMM's contraction dimension K).

Spec grammar: ``NAME[:key=value[,key=value]]``.

- ``mxfp8_e4m3`` (alias ``mxfp8``), ``mxfp8_e5m2``, ``mxfp6_e2m3``, ``mxfp6_e3m2``, ``mxfp4``: OCP MX, blocks of 32,
  E8M0 scale; key ``scale=floor|ceil|even|rceil`` (default ``rceil``).
- ``nvfp4``: E2M1, blocks of 16 with E4M3 block scales and an FP32 per-tensor scale ``amax / (448·6)``; key
  ``tile=1x16|16x16`` (default 1x16; 16x16 is Transformer Engine's 2D weight block).
- ``fp8_tensorwise``: one FP32 scale ``max/amax``; keys ``elem=e4m3|e5m2`` (default e4m3), ``pow2`` (default false).
- ``fp8_rowwise``: one scale per row along K; keys ``elem``, ``pow2`` (default true, as torchao's rowwise).
- ``fp8_block``: DeepSeek-V3 / TE Float8BlockScaling tiles; keys ``tile=1x128|128x128`` (default 1x128), ``elem``,
  ``pow2`` (default false).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MX_MODES",
    "RECIPE_NAMES",
    "AmaxScale",
    "MXScale",
    "NVFP4Scale",
    "Recipe",
    "check_block_shape",
    "is_recipe",
    "parse_recipe",
]

MX_MODES = ("floor", "ceil", "even", "rceil")
_MX_ELEMENTS = {
    "mxfp8_e4m3": "fp8_e4m3",
    "mxfp8_e5m2": "fp8_e5m2:overflow=saturate",
    "mxfp6_e2m3": "float6_e2m3fn",
    "mxfp6_e3m2": "float6_e3m2fn",
    "mxfp4": "float4_e2m1fn",
}
_FP8_ELEMENTS = {"e4m3": "fp8_e4m3", "e5m2": "fp8_e5m2:overflow=saturate"}
_TILES = {"1x128": (1, 128), "128x128": (128, 128)}
_NVFP4_TILES = {"1x16": (1, 16), "16x16": (16, 16)}
_ALIASES = {"mxfp8": "mxfp8_e4m3"}
RECIPE_NAMES = (*_MX_ELEMENTS, "nvfp4", "fp8_tensorwise", "fp8_rowwise", "fp8_block")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class MXScale:
    """E8M0 (power-of-two) block scale from the block amax; `mode` in `MX_MODES` (torchao ScaleCalculationMode)."""

    mode: str = "rceil"


@dataclass(frozen=True)
class NVFP4Scale:
    """Two-level NVFP4 scale: FP32 per-tensor ``amax/(448·6)`` times an E4M3 block scale (torchao nvfp4_quantize)."""

    block_scale_format: str = "fp8_e4m3"


@dataclass(frozen=True)
class AmaxScale:
    """FP32 scale ``s = max_elem / max(amax, eps)``; `pow2` rounds it down to a power of two; elements ``x * s``.

    `convention` ``torchao`` (float8 ``amax_to_scale``: dequantize ``q / s``) or ``te`` (Transformer Engine's
    blockwise reference: an infinite scale becomes float32 max, amax 0 gives scale 1, dequantize ``q * (1/s)``).
    """

    pow2: bool = False
    eps: float = 1e-12
    convention: str = "torchao"


@dataclass(frozen=True)
class Recipe:
    """One operand's quantization: element format, block shape (rows, cols) and scale rule.

    A block dimension of 0 means the whole dimension: (0, 0) is per tensor, (1, 0) per row along K.
    """

    name: str  # canonical spec string
    element: str  # FloatFormat spec of the elements
    block: tuple[int, int]
    scale: MXScale | NVFP4Scale | AmaxScale

    @property
    def k_multiple(self) -> int:
        """What the last dimension must be a multiple of (1 when blocks span the whole row)."""
        return self.block[1] or 1

    @property
    def row_multiple(self) -> int:
        """What the second-to-last dimension must be a multiple of (128 for 128x128 tiles, else 1)."""
        return self.block[0] if self.block[0] > 1 else 1


def _fail(spec: str, msg: str, kind: str = "recipe") -> ValueError:
    return ValueError(f"bad {kind} {spec!r}: {msg}")


def parse_knobs(
    spec: str, name: str, text: str, valid: tuple[str, ...], kind: str = "recipe"
) -> dict[str, str]:
    """`key=value,...` options of `name` in `spec`, each key among `valid` and given once (one-line errors that
    start ``bad {kind}``)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = (s.strip().lower() for s in item.partition("="))
        if key not in valid or not eq or not value:
            keys = ", ".join(valid) if valid else "none"
            raise _fail(spec, f"unknown option {item!r} for {name}; valid keys: {keys} (as key=value)", kind)
        if key in out:
            raise _fail(spec, f"option {key!r} given twice", kind)
        out[key] = value
    return out


def choose(spec: str, key: str, value: str, valid: tuple[str, ...], kind: str = "recipe") -> str:
    """`value` of option `key` if it is among `valid`, else a one-line error naming them."""
    if value not in valid:
        raise _fail(spec, f"{key}={value} is not valid; valid: {', '.join(valid)}", kind)
    return value


def parse_flag(spec: str, key: str, value: str | None, default: bool, kind: str = "recipe") -> bool:
    """A true/false option (`default` when not given)."""
    if value is None:
        return default
    return _BOOLS[choose(spec, key, value, tuple(_BOOLS), kind)]


def is_recipe(spec: str) -> bool:
    """Whether `spec` names a recipe (its options are not checked): the dispatch test for `quantize`."""
    name = spec.strip().partition(":")[0].strip().lower()
    return _ALIASES.get(name, name) in RECIPE_NAMES


def _fp8_recipe(spec: str, name: str, text: str) -> Recipe:
    tiled = name == "fp8_block"
    kn = parse_knobs(spec, name, text, ("tile", "elem", "pow2") if tiled else ("elem", "pow2"))
    elem = choose(spec, "elem", kn.get("elem", "e4m3"), tuple(_FP8_ELEMENTS))
    pow2 = parse_flag(spec, "pow2", kn.get("pow2"), default=name == "fp8_rowwise")
    opts = f"elem={elem},pow2={str(pow2).lower()}"
    if not tiled:  # torchao float8
        block = (0, 0) if name == "fp8_tensorwise" else (1, 0)
        return Recipe(f"{name}:{opts}", _FP8_ELEMENTS[elem], block, AmaxScale(pow2))
    tile = choose(spec, "tile", kn.get("tile", "1x128"), tuple(_TILES))  # Transformer Engine blockwise
    rule = AmaxScale(pow2, eps=0.0, convention="te")
    return Recipe(f"{name}:tile={tile},{opts}", _FP8_ELEMENTS[elem], _TILES[tile], rule)


def parse_recipe(spec: str) -> Recipe:
    """Parse a recipe spec (module docstring for the grammar); raises ValueError naming the valid choices."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty recipe spec; valid recipes: {', '.join(RECIPE_NAMES)}")
    raw, _, text = spec.strip().partition(":")
    name = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if name in _MX_ELEMENTS:
        mode = choose(
            spec, "scale", parse_knobs(spec, name, text, ("scale",)).get("scale", "rceil"), MX_MODES
        )
        return Recipe(f"{name}:scale={mode}", _MX_ELEMENTS[name], (1, 32), MXScale(mode))
    if name == "nvfp4":
        tile = choose(
            spec, "tile", parse_knobs(spec, name, text, ("tile",)).get("tile", "1x16"), tuple(_NVFP4_TILES)
        )
        canonical = "nvfp4" if tile == "1x16" else f"nvfp4:tile={tile}"
        return Recipe(canonical, "float4_e2m1fn", _NVFP4_TILES[tile], NVFP4Scale())
    if name in ("fp8_tensorwise", "fp8_rowwise", "fp8_block"):
        return _fp8_recipe(spec, name, text)
    raise ValueError(
        f"unknown recipe {raw.strip()!r}; valid recipes: {', '.join(RECIPE_NAMES)} (alias: mxfp8)"
    )


def check_block_shape(recipe: Recipe | str, shape: tuple[int, ...]) -> None:
    """Raise ValueError if `shape` cannot be cut into `recipe`'s blocks (last dim = K, blocks along it)."""
    r = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    if len(shape) == 0:
        raise ValueError(f"{r.name} needs a tensor with at least one dimension (the last one is K)")
    k = shape[-1]
    if k % r.k_multiple:
        raise ValueError(
            f"{r.name} quantizes blocks of {r.k_multiple} along the last dimension (K), "
            f"but K={k} is not a multiple of {r.k_multiple}"
        )
    rows = shape[-2] if len(shape) >= 2 else 1
    if rows % r.row_multiple:
        raise ValueError(
            f"{r.name} quantizes {r.block[0]}x{r.block[1]} tiles, but the second-to-last dimension ({rows}) "
            f"is not a multiple of {r.row_multiple}"
        )
