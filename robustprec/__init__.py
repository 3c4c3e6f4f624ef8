"""robustprec: is a reduced-precision numerics scheme as robust to seeds and learning rates as BF16?"""

__version__ = "0.1.0"
