"""Sweeps on real multi-process Ray clusters (no mocks): `ray job submit` to a `ray start` head, and a worker node
killed mid-trial.

Every Ray process started here is isolated from other Ray users of the machine: its own temp dir (`RAY_TMPDIR`,
`--temp-dir`), its own ports, its own auth token (`RAY_AUTH_MODE=token` + `RAY_AUTH_TOKEN_PATH`, never
`~/.ray/auth_token`), and it is stopped by signalling the processes started here, never by `ray stop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from robustprec.config import load_config
from robustprec.sweep.plan import SweepPlan, plan_sweep
from robustprec.sweep.run import result_rows
from robustprec.sweep.spec import TrialSpec
from tests.conftest import REPO

SMOKE = REPO / "configs" / "smoke.yaml"
VENV_BIN = Path(sys.executable).parent  # the `ray` CLI
GRID = {  # 2 seeds x 2 learning rates, fp32: 4 trials
    "train.seq_len": 32,
    "train.eval_sequences": 16,
    "train.sharpness.sequences": 16,
    "data.embedded_max_bytes": 400000,
    "sweep.seeds": 2,
    "sweep.lrs": "[1e-3,3e-3]",
    "sweep.formats": "[fp32]",
}
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_TMPDIR")


def overrides(**extra: object) -> list[str]:
    return [f"{k}={v}" for k, v in {**GRID, **extra}.items()]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def private_ray_dir() -> Iterator[Path]:
    """A short folder under /tmp (Ray's socket paths must stay under ~107 characters) holding a fresh auth token
    and Ray's temp dir; afterwards, any process whose command line names it is killed, then it is removed."""
    base = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp" if Path("/tmp").is_dir() else None))
    (base / "token").write_text(secrets.token_hex(32))
    (base / "ray").mkdir()
    # `python` for jobs' entrypoints: this venv's interpreter. Only it: putting the venv's bin/ first on PATH would
    # also switch `ninja` (pip's 1.13 vs a system 1.11 here), whose build log hashes differ, and every switch
    # rebuilds DeepSpeed's JIT op (~40 s on 2 cores) in the cluster's processes and again in later tests.
    (base / "bin").mkdir()
    (base / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (base / "bin" / "python").chmod(0o755)
    try:
        yield base
    finally:
        kill_processes_naming(str(base))
        shutil.rmtree(base, ignore_errors=True)


def ray_env(base: Path) -> dict[str, str]:
    """Environment for Ray processes of this test: token auth with this test's own token, its own temp dir."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(base / "token"),
        RAY_TMPDIR=str(base / "ray"),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{base / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def kill_processes_naming(marker: str) -> None:
    """SIGKILL leftover processes started by this test (their command line holds the test's private folder)."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def curve(out_dir: str | Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    table = pq.read_table(Path(out_dir) / "curve.parquet")
    steps = table.column("step").to_pylist()
    evals = [np.nan if v is None else v for v in table.column("eval_loss").to_pylist()]
    return steps, np.array(table.column("loss").to_pylist()), np.array(evals, dtype=float)


def summary(spec: TrialSpec) -> dict:
    return json.loads((Path(spec.out_dir) / "summary.json").read_text())


def assert_complete_records(plan: SweepPlan, steps: int) -> None:
    """Every trial has a finished record whose curve holds each step exactly once, and trials.parquet lists all."""
    for spec in plan.trials:
        out = Path(spec.out_dir)
        assert (out / "summary.json").exists(), (
            f"{spec.trial_id}: no summary.json; {tail(out / 'error.json')}"
        )
        s = summary(spec)
        assert s["status"] in ("converged", "diverged"), (spec.trial_id, s["status"])
        if s["status"] == "converged":
            assert s["steps_completed"] == steps, spec.trial_id
        got, loss, _ = curve(spec.out_dir)
        assert got == list(range(s["steps_completed"])), f"{spec.trial_id}: steps {got}"
        assert np.isfinite(loss).all() or s["status"] == "diverged", spec.trial_id
    table = pq.read_table(Path(plan.root) / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in table) == sorted(plan.trial_ids)
    by_id = {r["trial_id"]: r for r in table}
    for row in result_rows(plan):
        assert by_id[row["trial_id"]]["status"] == row["status"]


# ------------------------------------------------------------------------------------ ray start + ray job submit


@contextlib.contextmanager
def ray_head(base: Path, env: dict[str, str], num_cpus: int = 2) -> Iterator[str]:
    """`ray start --head --block` in its own session; yields the dashboard (job submission) address. Stopped by
    SIGTERM to that process (it shuts down the processes it started), then SIGKILL for anything left."""
    gcs, dashboard, agent, client = free_ports(4)
    log = base / "head.log"
    with log.open("wb") as out:
        head = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                "--head",
                "--block",
                f"--num-cpus={num_cpus}",
                f"--port={gcs}",
                f"--dashboard-port={dashboard}",
                "--include-dashboard=true",
                f"--dashboard-agent-listen-port={agent}",
                f"--ray-client-server-port={client}",
                f"--temp-dir={base / 'ray'}",
                "--object-store-memory=200000000",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, f"ray start exited with {head.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"the Ray head did not come up:\n{tail(log)}"
            if "Ray runtime started" in tail(log, 100_000):
                try:
                    urllib.request.urlopen(f"{address}/api/version", timeout=5).close()
                    break
                except urllib.error.HTTPError:  # up, and asking for the token
                    break
                except OSError:
                    pass
            time.sleep(0.5)
        yield address
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)  # drains (up to 30 s) and stops this head's processes only
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
        kill_processes_naming(str(base))


NO_AGENT = "No available agent to submit job"


def submit_when_an_agent_is_up(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, again while the head refuses it because its job agent has not registered yet (the
    dashboard answers before the agent does: seen once in CI on a busy 2-core machine). Nothing ran then."""
    deadline = time.monotonic() + 90
    while True:
        job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        if job.returncode == 0 or NO_AGENT not in job.stdout + job.stderr or time.monotonic() > deadline:
            return job
        time.sleep(2)


def working_dir(dst: Path) -> Path:
    """What the job needs (the package, the job script, the configs): a small, deterministic upload."""
    for name in ("robustprec", "jobs", "configs"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.mark.slow
def test_ray_job_submit_smoke_sweep(tmp_path):
    steps = 20
    sets = overrides(**{"train.steps": steps, "train.eval_interval": 10, "train.checkpoint_interval": 10})
    storage = (tmp_path / "sweeps").resolve()
    plan = plan_sweep(load_config(SMOKE, sets), name="smoke-ci", root=storage)
    assert len(plan.trials) == 4

    with private_ray_dir() as base:
        env = ray_env(base)
        wd = working_dir(base / "wd")
        with ray_head(base, env) as address:
            # Token auth is on: the job API refuses a request without the token.
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(f"{address}/api/jobs/", timeout=10)
            assert denied.value.code in (401, 403)
            cmd = [
                str(VENV_BIN / "ray"),
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(wd),
                "--",
                "python",
                "jobs/sweep.py",
                "--config",
                "configs/smoke.yaml",
                "--storage",
                str(storage),
                "--name",
                "smoke-ci",
                *(a for s in sets for a in ("--set", s)),  # the CLI shell-quotes the entrypoint
            ]
            job = submit_when_an_agent_is_up(cmd, env)
            out = job.stdout + job.stderr
            assert job.returncode == 0, out[-6000:]
    assert "succeeded" in out
    assert SweepPlan.read(storage / "smoke-ci").fingerprint == plan.fingerprint
    assert_complete_records(plan, steps)
    for spec in plan.trials:
        assert spec.trial_id in out  # the job printed its trial table


# ----------------------------------------------------------------------------------- node failure, Cluster util


@contextlib.contextmanager
def isolated_ray_auth(base: Path) -> Iterator[None]:
    """Point this process's Ray (the Cluster util runs in it) at the private token and temp dir, and back.

    Ray caches the auth mode (RayConfig) and the token (AuthenticationTokenLoader) per process; an earlier
    `ray.init()` in this pytest process may have cached `~/.ray/auth_token`, so both are reset either way."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state

    if ray.is_initialized():  # a session left by an earlier test would lose its token under it
        ray.shutdown()
    names = (*AUTH_VARS, "RAY_USAGE_STATS_ENABLED")
    saved = {k: os.environ.get(k) for k in names}
    env = ray_env(base)
    for k in names:
        os.environ.pop(k, None)
        if k in env:
            os.environ[k] = env[k]
    reset_auth_token_state()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_auth_token_state()


DRIVER = """
import sys
from robustprec.sweep.plan import SweepPlan
from robustprec.sweep.run import run_sweep

outcome = run_sweep(SweepPlan.read(sys.argv[1]))
print("counts", outcome.counts, flush=True)
sys.exit(0 if outcome.counts["converged"] + outcome.counts["diverged"] == len(outcome.rows) else 1)
"""


def running(spec: TrialSpec) -> bool:
    out = Path(spec.out_dir)
    return (out / "config.yaml").exists() and not (out / "summary.json").exists()


def checkpoint_tag(spec: TrialSpec) -> str | None:
    latest = Path(spec.out_dir) / "checkpoints" / "latest"
    return latest.read_text().strip() if latest.exists() else None


@pytest.mark.slow
def test_node_failure_reschedules_trials(tmp_path):
    import torch
    from ray.cluster_utils import Cluster

    from robustprec.sweep.trial import run_trial

    steps = 200  # ~25 ms a step here: seconds between a trial's first checkpoint and its end to kill it in
    sets = overrides(**{"train.steps": steps, "train.eval_interval": 40, "train.checkpoint_interval": 40})
    plan = plan_sweep(load_config(SMOKE, sets), name="nodefail", root=tmp_path / "sweeps")
    assert len(plan.trials) == 4 and plan.trials[0].cfg.sweep.resources == {"CPU": 1}
    assert plan.trials[0].cfg.train.max_failures >= 1

    with private_ray_dir() as base, isolated_ray_auth(base):
        plan_file = plan.write(base / "plan.json")  # not the sweep's own plan.json: the sweep starts fresh
        log = base / "driver.log"
        dashboard, agent = free_ports(2)
        # Trials never run on the head (0 CPUs): every trial lands on the worker node, which is killed.
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": True,  # stopped trials leak placement groups without it (STACK.md)
                "dashboard_port": dashboard,
                "dashboard_agent_listen_port": agent,
                # the GCS declares a killed node dead after 3 missed 1 s health checks (default 5 x 3 s)
                "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
            },
        )
        driver = None
        try:
            worker = cluster.add_node(num_cpus=2)
            with log.open("wb") as out:
                driver = subprocess.Popen(
                    [sys.executable, "-c", DRIVER, str(plan_file)],
                    cwd=REPO,
                    env={**os.environ, "RAY_ADDRESS": cluster.address},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 180
            while not any(running(s) and checkpoint_tag(s) for s in plan.trials):
                assert driver.poll() is None, f"driver exited with {driver.returncode}:\n{tail(log)}"
                assert time.monotonic() < deadline, f"no trial reached a checkpoint in time:\n{tail(log)}"
                time.sleep(0.05)
            interrupted = {s.trial_id: checkpoint_tag(s) for s in plan.trials if running(s)}
            cluster.remove_node(worker, allow_graceful=False)  # a crash: raylet and its workers die
            cluster.add_node(num_cpus=2)  # the replacement: Tune retries the killed trials there
            try:
                rc = driver.wait(timeout=240)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the sweep did not finish after the node was replaced:\n{tail(log)}")
            assert rc == 0, tail(log)
        finally:
            if driver is not None and driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
            cluster.shutdown()

    assert_complete_records(plan, steps)
    assert all(summary(s)["status"] == "converged" for s in plan.trials)
    specs = {s.trial_id: s for s in plan.trials}
    assert any(interrupted.values()), interrupted
    for tid, tag in interrupted.items():
        restarts = summary(specs[tid])["restarts"]
        # resumed from its checkpoint exactly once (a trial killed before its first checkpoint starts over)
        assert (restarts == 1) if tag else (restarts in (0, 1)), (tid, tag, restarts)
    assert sum(summary(s)["restarts"] for s in plan.trials) == sum(
        summary(specs[t])["restarts"] for t in interrupted
    ), "a trial that was not on the killed node restarted"

    # The rescheduled trials' curves equal uninterrupted runs of the same configs (one thread, as the sweep's
    # one-CPU trials run), in this process. Observed bit-identical (resumed on the same world size, 1).
    threads = torch.get_num_threads()
    try:
        for tid in interrupted:
            spec = specs[tid]
            config = {**spec.config, "train": {**spec.config["train"], "threads": 1}}
            ref = run_trial(dataclasses.replace(spec, config=config, out_dir=str(tmp_path / "ref" / tid)))
            assert ref.status == "converged" and ref.restarts == 0
            ref_steps, ref_loss, ref_eval = curve(ref.out_dir)
            got_steps, got_loss, got_eval = curve(spec.out_dir)
            assert got_steps == ref_steps == list(range(steps))
            np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6, atol=0)
            np.testing.assert_allclose(got_eval, ref_eval, rtol=1e-6, atol=0)
            assert summary(spec)["final_eval_loss"] == pytest.approx(ref.summary["final_eval_loss"], rel=1e-6)
    finally:
        torch.set_num_threads(threads)
