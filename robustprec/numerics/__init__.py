"""Number formats, quantization, simulated GEMMs and numerics backends.

`parse_format`, `FloatFormat` and `quantize` are re-exported lazily so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FloatFormat", "parse_format", "quantize"]


def __getattr__(name: str) -> Any:
    if name in ("FloatFormat", "parse_format"):
        from robustprec.numerics import formats

        return getattr(formats, name)
    if name == "quantize":
        from robustprec.numerics.quantize import quantize

        return quantize
    raise AttributeError(name)
