"""benchmarks/throughput.py end to end on CPU at tiny size: both loops, the independent GPT, the profile, the JSON."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_train import DIST_VARS


def _run_benchmark(tmp_path, args: list[str]) -> tuple[dict, str]:
    """benchmarks/throughput.py with `args` in a fresh process: (its --json results, its stdout)."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    proc = subprocess.run(
        [sys.executable, "benchmarks/throughput.py", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_throughput_benchmark_writes_rows_and_profiles(tmp_path):
    args = ["--presets", "tiny,tiny-gpt2", "--backends", "fp32,bf16", "--seq-len", "64", "--batch", "8",
            "--steps", "6", "--no-compile", "--profile", "--reference-gpt",
            "--set", "data.embedded_max_bytes=400000"]  # fmt: skip
    res, stdout = _run_benchmark(tmp_path, args)
    assert "| preset | backend | robustprec tok/s |" in stdout

    compare = [r for r in res["rows"] if r["kind"] == "compare"]
    assert [(r["preset"], r["backend"]) for r in compare] == [
        (p, b) for p in ("tiny", "tiny-gpt2") for b in ("fp32", "bf16")
    ]
    for r in compare:
        assert r["robustprec_tokens_per_s"] > 0 and r["plain_tokens_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["robustprec_tokens_per_s"] / r["plain_tokens_per_s"])
        assert r["robustprec_mfu"] is None and r["plain_mfu"] is None  # no peak on CPU
        assert r["timed_steps"] == 3
        assert r["robustprec_first_step_s"] > 0
        for loop in ("robustprec", "plain"):  # every timed step's time; their mean is the row's
            assert len(r[f"{loop}_steps_ms"]) == 3 and min(r[f"{loop}_steps_ms"]) > 0
            assert r[f"{loop}_step_ms"] == pytest.approx(sum(r[f"{loop}_steps_ms"]) / 3)
            # the end-of-step sync's wait is part of each step's time
            waits = r[f"{loop}_sync_wait_ms"]
            assert len(waits) == 3 and all(
                0 <= w <= t for w, t in zip(waits, r[f"{loop}_steps_ms"], strict=True)
            )
    (ref,) = [r for r in res["rows"] if r["kind"] == "reference"]
    assert ref["preset"] == "tiny-gpt2" and ref["plain_tokens_per_s"] > 0
    assert any("independent GPT skipped for tiny" in n for n in res["notes"])
    assert {(s["preset"], s["backend"]) for s in res["speedups"]} == {("tiny", "fp32"), ("tiny-gpt2", "fp32")}

    loops = {(p["preset"], p["backend"], p["loop"]) for p in res["profiles"]}
    assert ("tiny", "bf16", "robustprec") in loops and ("tiny", "bf16", "plain") in loops
    assert len(res["profiles"]) == 2 * 4 + 1
    for p in res["profiles"]:
        assert p["step_ms"] > 0 and p["busy_ms"] > 0
        assert (
            p["kernels_per_step"] >= 2 * 4
        )  # at least a forward and a backward GEMM per block (tiny: 2 blocks)
        assert set(p["categories_ms"]) >= {"gemm", "attention", "optimizer", "other"}
        assert all(ms >= 0 for ms in p["categories_ms"].values())
        assert p["categories_ms"]["gemm"] > 0  # aten::mm / addmm on CPU
        assert sum(p["kernels_per_step_by_category"].values()) == pytest.approx(p["kernels_per_step"])
        assert p["kernels_per_step_by_category"]["gemm"] >= 2 * 4


def test_a_row_the_model_cannot_run_is_noted_and_the_others_run(tmp_path):
    # tiny's d_ff = 176 is not a multiple of MX's 32-element blocks
    args = ["--presets", "tiny", "--backends", "sim:mxfp8,fp32", "--seq-len", "32", "--batch", "4", "--steps", "3",
            "--warmup", "1", "--no-compile", "--plain", "none"]  # fmt: skip
    res, _ = _run_benchmark(tmp_path, args)
    assert [r["backend"] for r in res["rows"] if r["kind"] == "compare"] == ["fp32"]
    (note,) = [n for n in res["notes"] if "sim:mxfp8: not run" in n]
    assert "not a multiple of 32" in note
