"""Number formats, quantization, simulated GEMMs and numerics backends.

`robustprec.numerics.quantize` is the function (the `quantize` submodule is shadowed on purpose; reach the module
with `importlib.import_module("robustprec.numerics.quantize")`).
"""

from __future__ import annotations

from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.quantize import quantize

__all__ = ["FloatFormat", "parse_format", "quantize"]
