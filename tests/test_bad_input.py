"""Bad input never gets through: every case below exits 2 with one line naming what is wrong (and the valid
choices where there are any), no traceback, and leaves everything already written as it was: run records,
`config.yaml`, the sweep, and the analysis logged on the MLflow parent run.

The CLI runs in-process (`click.testing.CliRunner`, the real `main`); the records come from real training, a
real sync into SQLite and a real `analyze`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from robustprec.cli import main
from robustprec.config import load_config
from robustprec.sweep.plan import plan_sweep
from robustprec.sweep.trial import run_trial
from robustprec.tracking.mlflow_mirror import sync_sweep
from tests.conftest import tiny_overrides
from tests.test_cli import _expect_one_line_error

SMALL = {"train.steps": 20, "train.eval_interval": 10, "train.checkpoint_interval": 10, "train.threads": 1}


def invoke(args: list[str]) -> SimpleNamespace:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return SimpleNamespace(returncode=res.exit_code, stderr=res.stderr, stdout=res.stdout)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mirror(root: Path, uri: str, name: str, sets: dict[str, object]):
    plan = plan_sweep(load_config(None, tiny_overrides(**SMALL, **sets)), name=name, root=root)
    plan.write()
    for spec in plan.trials:
        run_trial(spec)
    return plan, sync_sweep(plan.root, uri)["parent_run_id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run with checkpoints, a mirrored 2-format sweep with its logged analysis, and damaged copies."""
    w = tmp_path_factory.mktemp("world")
    uri = f"sqlite:///{w / 'mlflow.db'}"
    sets = [a for s in tiny_overrides(**SMALL) for a in ("--set", s)]
    assert invoke(["train", *sets, "--out", w / "run"]).returncode == 0
    shutil.copytree(w / "run", w / "dangling")
    (w / "dangling" / "checkpoints" / "latest").write_text("step-00000099")
    plan, parent = _mirror(w / "sweeps", uri, "two", {"sweep.formats": "[fp32, bf16]", "sweep.seeds": 2})
    done = invoke(["analyze", "--run-id", parent, "--tracking-uri", uri, "--out", w / "analysis"])
    assert done.returncode == 0, done.stderr
    # a second sweep whose trial shows up twice (a duplicated child run), and a third whose record is damaged
    _, dup = _mirror(w / "sweeps", uri, "dup", {"sweep.formats": "[fp32, bf16]"})
    c = _client(uri)
    child = c.search_runs([c.get_run(dup).info.experiment_id], f"tags.mlflow.parentRunId = '{dup}'")[0]
    twin = c.create_run(child.info.experiment_id, tags={**child.data.tags, "robustprec.trial_id": "twin"})
    c.log_batch(twin.info.run_id, params=[_param(k, v) for k, v in child.data.params.items()])
    c.log_artifacts(twin.info.run_id, c.download_artifacts(child.info.run_id, "record", str(w)), "record")
    _, broken = _mirror(w / "sweeps", uri, "broken", {})
    child = c.search_runs([c.get_run(broken).info.experiment_id], f"tags.mlflow.parentRunId = '{broken}'")[0]
    (w / "bad").mkdir()
    (w / "bad" / "summary.json").write_text('{"status": "conv')
    c.log_artifact(child.info.run_id, str(w / "bad" / "summary.json"), "record")
    bad_sweep = plan_sweep(load_config(None, tiny_overrides(**SMALL)), name="torn", root=w / "sweeps")
    bad_sweep.write()
    Path(bad_sweep.trials[0].out_dir).mkdir(parents=True)
    shutil.copy(w / "bad" / "summary.json", bad_sweep.trials[0].out_dir)
    tokens = np.arange(300, dtype=np.uint16).repeat(50)  # ids up to 299: beyond the byte vocabulary (256)
    tokens.tofile(w / "wide.bin")
    (w / "list.yaml").write_text("- a\n- b\n")
    (w / "broken.yaml").write_text("train: [1, 2\n")
    (w / "typo.yaml").write_text("trian:\n  steps: 3\n")
    return SimpleNamespace(
        dir=w, uri=uri, parent=parent, dup=dup, broken=broken, plan=plan, child=child.info.run_id
    )


def _param(k: str, v: str):
    from mlflow.entities import Param

    return Param(k, v)


def _state(world) -> dict[str, object]:
    """Every record file's hash and what the parent run shows (tags, params, logged analysis)."""
    files = {}
    for sub in ("run", "dangling", "sweeps/two", "analysis"):
        for p in sorted((world.dir / sub).rglob("*")):
            if p.is_file():
                files[str(p.relative_to(world.dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    c = _client(world.uri)
    run = c.get_run(world.parent)
    logged = sorted(
        a.path
        for d in c.list_artifacts(world.parent, "analysis")
        for a in c.list_artifacts(world.parent, d.path)
    )
    return {"files": files, "tags": run.data.tags, "params": run.data.params, "logged": logged}


def _w(world, name: str) -> str:
    return str(world.dir / name)


CASES: list[tuple[str, list[str], str]] = [
    # train: config values
    ("preset", ["train", "--set", "model.preset=gpt5"], "valid presets"),
    ("unknown key", ["train", "--set", "train.stepz=3"], "valid keys here"),
    ("not a number", ["train", "--set", "optim.lr=abc"], "optim.lr"),
    ("negative lr", ["train", "--set", "optim.lr=-1"], "greater than 0"),
    ("zero stage", ["train", "--set", "train.zero_stage=5"], "0, 1, 2 or 3"),
    ("batch geometry", ["train", "--set", "train.global_batch_size=6", "--set", "train.micro_batch_size=4"], "multiple of"),
    ("override syntax", ["train", "--set", "optim.lr"], "key.path=value"),
    ("backend name", ["train", "--set", "numerics.backend=fp7"], "valid backends"),
    ("exponent bits", ["train", "--set", "numerics.backend=sim:E1M3"], "exponent bits must be in [2, 8]"),
    ("rounding", ["train", "--set", "numerics.backend=sim:E4M3:rounding=up"], "nearest, truncate, stochastic"),
    ("knob", ["train", "--set", "numerics.backend=sim:E4M3:colour=red"], "valid knobs"),
    ("mantissa bits", ["train", "--set", "numerics.backend=sim:E5M30"], "mantissa bits must be in [0, 23]"),
    ("fp8 recipe", ["train", "--set", "numerics.fp8_recipe=blockwise"], "tensorwise"),
    ("recipe scale", ["train", "--set", "numerics.backend=sim:mxfp8:scale=up"], "valid: floor, ceil, even, rceil"),
    ("recipe option", ["train", "--set", "numerics.backend=sim:nvfp4:rht=maybe"], "rht=maybe is not valid; valid: true"),
    ("recipe element", ["train", "--set", "numerics.backend=sim:fp8_block:grad=e2m1"], "valid: e4m3, e5m2"),
    ("recipe block vs K", ["train", "--set", "numerics.backend=sim:mxfp8"], "K=176 is not a multiple of 32"),
    ("nvfp4 vs K", ["train", "--set", "numerics.backend=sim:nvfp4", "--set", "model.d_ff=200"], "(200) is not a multiple of 16"),
    ("recipe tokens", ["train", "--set", "numerics.backend=sim:nvfp4", "--set", "train.seq_len=33"], "must be a multiple of 16"),
    ("accumulate chunk", ["train", "--set", "numerics.backend=sim:E4M3", "--set", "numerics.accumulate=E8M13"], "needs chunk=N"),
    ("accumulate format", ["train", "--set", "numerics.backend=sim:mxfp8", "--set", "model.d_ff=192", "--set", "numerics.accumulate=E9M13:chunk=32"], "exponent bits must be in [2, 8]"),
    ("hp layers", ["train", "--set", "numerics.backend=sim:nvfp4", "--set", "numerics.high_precision_layers.first=2"], "leaves none of the 2 blocks"),
    # train: data and run directories
    ("data path", ["train", "--set", "data.path={w}/nope.txt"], "does not exist"),
    ("corpus vocab", ["train", "--set", "data.path={w}/wide.bin"], "at least 300"),
    ("run exists", ["train", "--out", "{w}/run"], "--resume"),
    ("resume without out", ["train", "--resume"], "--resume needs --out"),
    ("resume changed config", ["train", "--resume", "--out", "{w}/run", "--set", "optim.lr=0.01"], "optim.lr: 0.003 -> 0.01"),
    ("resume dangling tag", ["train", "--resume", "--out", "{w}/dangling"], "which is missing; checkpoints present: step-"),
    ("nothing to resume", ["train", "--resume", "--out", "{w}/fresh"], "nothing to resume"),
    # configs
    ("config missing", ["train", "--config", "{w}/none.yaml"], "not found"),
    ("config not yaml", ["train", "--config", "{w}/broken.yaml"], "not valid YAML"),
    ("config not mapping", ["train", "--config", "{w}/list.yaml"], "mapping at the top level"),
    ("config typo", ["train", "--config", "{w}/typo.yaml"], "unknown key 'trian'"),
    # sweep
    ("sweep formats", ["sweep", "--dry-run", "--set", 'sweep.formats=["sim:E1M3", "sim:E4M3:rounding=up"]'], "exponent bits"),
    ("sweep lrs", ["sweep", "--dry-run", "--set", "sweep.lrs=logspace(1, 2)"], "logspace(lo, hi, n)"),
    ("sweep recipe scale", ["sweep", "--dry-run", "--set", "sweep.formats=[bf16, sim:mxfp8:scale=up]"], "valid: floor, ceil, even, rceil"),
    ("sweep recipe block", ["sweep", "--dry-run", "--set", "sweep.formats=[sim:mxfp4]"], "K=176 is not a multiple of 32"),
    ("sweep nvfp4 vs K", ["sweep", "--dry-run", "--set", "sweep.formats=[sim:nvfp4]", "--set", "model.d_model=72"], "K=72 is not a multiple of 16"),
    ("sweep accumulate step", ["sweep", "--dry-run", "--set", "sweep.formats=[bf16, sim:E4M3]", "--set", "numerics.accumulate=E8M13:chunk=128,step=48"], "step (48) must divide chunk (128)"),
    ("sweep seeds", ["sweep", "--dry-run", "--set", "sweep.seeds=0"], "at least 1"),
    ("sweep duplicate", ["sweep", "--dry-run", "--set", "sweep.formats=[bf16, bf16]"], "twice"),
    ("sweep axis key", ["sweep", "--dry-run", "--set", "sweep.axes={{model.qk_normz: [true]}}"], "valid keys at model"),
    ("sweep exclude", ["sweep", "--dry-run", "--set", "sweep.exclude=[{{numerics.rounding: x}}]"], "axes: seed"),
    ("sweep name", ["sweep", "--dry-run", "--name", "my sweep!"], "A-Z a-z 0-9"),
    ("sweep vocab", ["sweep", "--dry-run", "--set", "data.path={w}/wide.bin", "--set", "sweep.seeds=2"], "vocabulary of 256"),
    ("sweep other plan", ["sweep", "--storage", "{w}/sweeps", "--name", "two", "--set", "sweep.seeds=3"], "different plan"),
    # analyze
    ("reference not swept", ["analyze", "--run-id", "{parent}", "--tracking-uri", "{uri}", "--reference", "fp8"], "formats: bf16, fp32"),
    ("unknown run", ["analyze", "--run-id", "0123456789abcdef", "--tracking-uri", "{uri}"], "no MLflow run"),
    ("child run", ["analyze", "--run-id", "{child}", "--tracking-uri", "{uri}", "--reference", "fp32"], "pass its sweep's parent run id"),
    ("out holds other reference", ["analyze", "--run-id", "{parent}", "--tracking-uri", "{uri}", "--reference", "fp32", "--out", "{w}/analysis"], "holds the analysis for reference 'bf16'"),
    ("duplicate trial", ["analyze", "--run-id", "{dup}", "--tracking-uri", "{uri}", "--reference", "fp32"], "both have lr=0.003, seed="),
    ("damaged summary", ["analyze", "--run-id", "{broken}", "--tracking-uri", "{uri}", "--reference", "fp32"], "not valid JSON"),
    # sync
    ("sync not a sweep", ["sync", "--sweep", "{w}/run", "--tracking-uri", "{uri}"], "no plan.json"),
    ("sync damaged summary", ["sync", "--sweep", "{w}/sweeps/torn", "--tracking-uri", "{uri}"], "not valid JSON"),
    # formats
    ("formats exponent", ["formats", "E1M3"], "exponent bits must be in [2, 8]"),
    ("formats alias", ["formats", "sim:fp9"], "aliases: "),
    ("formats knob value", ["formats", "E4M3:overflow=wrap"], "valid: inf, saturate"),
    ("formats recipe", ["formats", "mxfp8:scale=up"], "valid: floor, ceil, even, rceil"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, args, needle):
    fill = {
        "w": world.dir,
        "uri": world.uri,
        "parent": world.parent,
        "dup": world.dup,
        "broken": world.broken,
    }
    fill["child"] = (
        _client(world.uri)
        .search_runs(
            [_client(world.uri).get_run(world.parent).info.experiment_id],
            f"tags.mlflow.parentRunId = '{world.parent}'",
        )[0]
        .info.run_id
    )
    before = _state(world)
    _expect_one_line_error(invoke([a.format(**fill) for a in args]), needle)
    assert _state(world) == before
    assert not (world.dir / "fresh").exists()


def test_the_battery_is_broad():
    commands = {args[0] for _, args, _ in CASES}
    assert len(CASES) >= 30 and commands == {"train", "sweep", "analyze", "sync", "formats"}


def test_another_reference_is_logged_beside_the_first_never_over_it(world):
    c = _client(world.uri)
    before = _state(world)
    res = invoke(["analyze", "--run-id", world.parent, "--tracking-uri", world.uri, "--reference", "fp32",
                  "--out", world.dir / "analysis_fp32"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    after = _state(world)
    assert after["tags"]["mlflow.note.content"] == before["tags"]["mlflow.note.content"]
    assert "Reference format: **bf16**" in after["tags"]["mlflow.note.content"]
    assert after["tags"]["robustprec.note_reference"] == "bf16"
    first = [p for p in before["logged"] if p.startswith("analysis/bf16/")]
    assert first and set(first) <= set(after["logged"])
    assert {"analysis/fp32/report.md", "analysis/fp32/analysis.json"} <= set(after["logged"])
    logged = json.loads(Path(c.download_artifacts(world.parent, "analysis/bf16/analysis.json")).read_text())
    assert logged["reference"] == "bf16"
