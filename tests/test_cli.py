"""The CLI as a user meets it: instant help, clear one-line errors, a real training run."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, tiny_overrides
from tests.test_train import _cli


def test_help_does_not_import_torch_or_ray():
    code = "import sys; from robustprec.cli import main; assert not {'torch', 'ray', 'deepspeed', 'mlflow'} & set(sys.modules), sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    out = _cli(["--help"])
    assert out.returncode == 0 and "train" in out.stdout and "formats" in out.stdout


def _expect_one_line_error(result, needle):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]


def _train(tmp_path, *sets):
    args = ["train"]
    for s in (*tiny_overrides(), *sets):
        args += ["--set", s]
    return _cli([*args, "--out", str(tmp_path / "run")])


def test_missing_data_path(tmp_path):
    _expect_one_line_error(_train(tmp_path, f"data.path={tmp_path / 'nope.txt'}"), "does not exist")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect_one_line_error(_train(tmp_path, f"data.path={tmp_path / 'empty'}"), "empty")


def test_parquet_without_text_column(tmp_path):
    pq.write_table(pa.table({"content": ["hello"] * 10}), tmp_path / "x.parquet")
    _expect_one_line_error(_train(tmp_path, f"data.path={tmp_path / 'x.parquet'}"), "no 'text' column")


def test_unknown_preset(tmp_path):
    _expect_one_line_error(_train(tmp_path, "model.preset=gpt5"), "valid presets")


@pytest.mark.parametrize(
    ("override", "needle"), [("train.stepz=3", "unknown key"), ("optim.lr=abc", "optim.lr")]
)
def test_invalid_key_or_value(tmp_path, override, needle):
    _expect_one_line_error(_train(tmp_path, override), needle)


def test_missing_config_file(tmp_path):
    _expect_one_line_error(_cli(["train", "--config", str(tmp_path / "x.yaml")]), "not found")


def test_refuses_to_overwrite_and_resume_needs_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    _expect_one_line_error(_train(tmp_path), "--resume")
    args = ["train", "--out", str(tmp_path / "fresh"), "--resume"]
    _expect_one_line_error(_cli(args), "nothing to resume")


def test_train_command_on_real_text(tmp_path):
    data = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    if not data.exists():
        pytest.skip("shared data not present")
    res = _train(tmp_path, f"data.path={data}", "train.steps=20")
    assert res.returncode == 0, res.stderr
    assert "converged" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["corpus"]["tokens"] == data.stat().st_size + 1
    assert summary["final_eval_loss"] < summary["initial_loss"]


@pytest.mark.slow
def test_train_with_two_ray_workers(tmp_path):
    sets = [a for s in tiny_overrides(**{"train.threads": 1, "train.zero_stage": 1}) for a in ("--set", s)]
    res = _cli(["train", *sets, "--workers", "2", "--out", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "launcher: ray, 2 worker(s), zero 1" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero_stage"] == 1 and summary["status"] == "converged"
    assert (tmp_path / "run" / "ray").is_dir()  # Ray Train's run folder (its checkpoints live there)
    again = _cli(["train", "--workers", "2", "--out", str(tmp_path / "run")])
    assert (
        again.returncode == 2 and "--resume" in again.stderr
    )  # an existing run is never overwritten silently
