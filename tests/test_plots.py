"""The per-cell loss-curve figure at the study's size (11 conditions x 6 LRs): it grows with the grid."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from robustprec.analysis.plots import DPI, loss_curves


def _rows(tmp_path, conditions: int, lrs: int) -> list[dict]:
    rows = []
    steps = np.arange(0, 100, 5)
    for c in range(conditions):
        for j in range(lrs):
            out = tmp_path / f"c{c}-l{j}"
            out.mkdir()
            pq.write_table(
                pa.table({"step": steps, "loss": 5.0 * np.exp(-steps / 40) + 3}), out / "curve.parquet"
            )
            fmt = f"sim:E{2 + c % 6}M{c}:scaling=tensor,rounding=stochastic"  # long labels, as a study has
            rows.append(
                {"format": fmt, "lr": 1e-4 * 3**j, "seed": 0, "status": "converged", "out_dir": str(out)}
            )
    return rows


def test_curve_figure_grows_with_the_grid(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    big = Image.open(loss_curves(_rows(tmp_path / "big", 11, 6), tmp_path / "big.png")).size
    small = Image.open(loss_curves(_rows(tmp_path / "small", 2, 2), tmp_path / "small.png")).size
    # every cell keeps its size: width and height are linear in columns and rows (1.9 x 1.52 inches a cell)
    assert abs((big[0] - small[0]) / DPI - 1.9 * 4) < 0.05
    assert abs((big[1] - small[1]) / DPI - 1.52 * 9) < 0.05
