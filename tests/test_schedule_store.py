import math

import pyarrow.parquet as pq
import pytest

from robustprec.config import OptimConfig
from robustprec.tracking.store import CurveWriter, read_curve
from robustprec.train.schedule import lr_at


def test_warmup_then_cosine_to_floor():
    o = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, o, 110) == pytest.approx(0.1)
    assert lr_at(9, o, 110) == pytest.approx(1.0)
    assert lr_at(10, o, 110) == pytest.approx(1.0)
    assert lr_at(60, o, 110) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, o, 110) == pytest.approx(0.1)
    c = OptimConfig(lr=2.0, warmup_steps=0, schedule="constant")
    assert {lr_at(s, c, 50) for s in range(50)} == {2.0}


def test_curve_writer_parts_truncate_and_close(tmp_path):
    w = CurveWriter(tmp_path)
    for s in range(10):
        w.append({"step": s, "loss": float(s), **({"eval_loss": 1.0} if s % 5 == 4 else {})})
        if s in (3, 7):
            w.flush()
    assert read_curve(tmp_path).num_rows == 8  # flushed parts are readable mid-run
    w.truncate_after(5)
    w2 = CurveWriter(tmp_path)  # a resumed writer continues the numbering
    w2.append({"step": 6, "loss": 60.0})
    table = w2.close()
    assert table["step"].to_pylist() == [0, 1, 2, 3, 4, 5, 6]
    assert table["loss"].to_pylist()[-1] == 60.0
    assert table["eval_loss"].to_pylist()[4] == 1.0 and table["eval_loss"].to_pylist()[0] is None
    assert pq.read_table(tmp_path / "curve.parquet").equals(table)
    assert not (tmp_path / "curve.parts").exists()
