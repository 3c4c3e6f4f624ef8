"""Terminal display for the CLI: progress bars and summary tables (rich, on stderr/stdout)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

NON_TTY_WIDTH = (
    240  # piped output (`ray job submit` logs, files): wide enough that paths and run ids stay whole
)


def _console(stderr: bool = False) -> Console:
    """A console that never breaks a line inside a word: soft-wrapped text, and when the output is not a terminal
    (and COLUMNS is unset) a wide virtual width instead of rich's 80 columns."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, soft_wrap=True, width=NON_TTY_WIDTH)
    return console


_err = _console(stderr=True)
_out = _console()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


class TrainProgress:
    """A single progress line: steps, loss, eval loss, tokens/s. Falls back to periodic lines when not a TTY."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_err,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total, loss="-", eval="-", tps="-")
        self._tokens_prev: int | None = None
        self._started = False

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            self.progress.stop()

    def update(self, row: dict[str, Any]) -> None:
        if not self._started:  # started lazily, so setup errors print on a clean line
            self.progress.start()
            self._started = True
        fields: dict[str, Any] = {"loss": _fmt(row["loss"])}
        if row.get("step_time_s"):
            tokens = row["tokens"] - (self._tokens_prev if self._tokens_prev is not None else 0)
            if self._tokens_prev is not None:
                fields["tps"] = f"{tokens / row['step_time_s']:,.0f}"
            self._tokens_prev = row["tokens"]
        if "eval_loss" in row:
            fields["eval"] = _fmt(row["eval_loss"])
        self.progress.update(self.task, completed=row["step"] + 1, **fields)


_SUMMARY_KEYS = (
    "status", "reason", "diverged_at", "diverged_phase", "initial_loss", "final_eval_loss", "steps_completed",
    "instability_events", "tokens_per_s", "mfu", "params", "wall_time_s", "device",
)  # fmt: skip


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    _out.print(f"run {run_dir}")
    table = Table(show_header=True)
    table.add_column("key")
    table.add_column("value")
    for key in _SUMMARY_KEYS:
        table.add_row(key, _fmt(summary.get(key)))
    table.add_row("numerics", _fmt(summary["numerics"].get("backend")))
    _out.print(table)
    _out.print(f"records: {run_dir}/summary.json, {run_dir}/curve.parquet, {run_dir}/config.yaml")


def print_formats() -> None:
    from robustprec.numerics.formats import format_table

    backends = Table(title="numerics backends (numerics.backend)", box=box.SIMPLE)
    backends.add_column("backend")
    backends.add_column("what it does")
    for name, what in (
        ("fp32", "full fp32 (reference for exactness)"),
        ("bf16", "bf16 autocast; fp32 master weights and optimizer state"),
        (
            "sim:<format>",
            "GEMM operands (act, weight, grad) quantized to a simulated ExMy format, fp32 accumulation",
        ),
        ("fp16", "DeepSpeed fp16 with dynamic loss scaling (CUDA); skipped steps and loss scale recorded"),
        (
            "fp8",
            "torchao float8 training (numerics.fp8_recipe), bf16 elsewhere; emulated on CPU; SM89+ on GPU",
        ),
        ("te", "Transformer Engine linears under fp8_autocast (if installed, CUDA)"),
    ):
        backends.add_row(name, what)
    _out.print(backends)
    table = Table(
        title="format aliases (use as sim:<alias> or sim:E<e>M<m>[:knob=value,...])", box=box.SIMPLE
    )
    for col in ("alias", "spec", "max normal", "min normal", "min subnormal", "epsilon"):
        table.add_column(col)
    for row in format_table():
        table.add_row(
            row["name"], str(row["spec"]), f"{row['max_normal']:.4g}", f"{row['min_normal']:.4g}",
            f"{row['min_subnormal']:.4g}", f"{row['epsilon']:.4g}",
        )  # fmt: skip
    _out.print(table)
    _out.print(
        "knobs: special=ieee|fn|finite, subnormals=true|false, overflow=saturate|inf|nan, "
        "rounding=nearest|truncate|stochastic, scaling=none|tensor|block:N; per operand: act=, weight=, grad="
    )
    print_recipes()


def print_recipes() -> None:
    """The training recipes (sim:<recipe>[:key=value,...]) with their definitions (docs/recipes.md)."""
    from robustprec.numerics.training_recipes import RECIPES

    table = Table(title="training recipes (use as sim:<recipe>[:key=value,...])", box=box.SIMPLE)
    table.add_column("recipe")
    table.add_column("definition")
    for name, what in RECIPES.items():
        table.add_row(name, what)
    _out.print(table)
    _out.print(
        "every recipe: act=, weight=, grad= set one operand's element (e4m3, e5m2, e2m3, e3m2, e2m1); "
        "numerics.wgrad=high, numerics.high_precision_layers={first: N, last: M}; base precision bf16"
    )


def _print_recipe(backend: str) -> None:
    from robustprec.numerics.training_recipes import SLOTS, parse_training_recipe

    r = parse_training_recipe(backend.removeprefix("sim:"))
    _out.print(f"sim:{r.name}: training recipe; each GEMM quantizes its own copy of each operand:")
    for (gemm, op), s in zip(SLOTS, r.slots, strict=True):
        what = "base precision (unquantized)" if s is None else s.recipe
        tricks = ", ".join(
            t for t, on in (("stochastic rounding", s and s.stochastic), ("RHT 16x16", s and s.rht)) if on
        )
        _out.print(f"  {gemm:5s} {op:6s} {what}{'; ' + tricks if tricks else ''}", soft_wrap=True)


def print_format(backend: str) -> None:
    """One checked backend spec; a `sim:` format with its range."""

    from robustprec.numerics.training_recipes import is_training_recipe

    if not backend.startswith("sim:"):
        _out.print(f"{backend}: a native backend (see `robustprec formats`)")
        return
    if is_training_recipe(backend.removeprefix("sim:")):
        _print_recipe(backend)
        return
    from robustprec.numerics.backends import _operand_formats

    for label, f in _operand_formats(backend.removeprefix("sim:")).items():
        _out.print(
            f"{backend if label == 'base' else '  ' + label}: E{f.exp_bits}M{f.man_bits}, special={f.special}, "
            f"subnormals={f.subnormals}, overflow={f.overflow}, rounding={f.rounding}, scaling={f.scaling}; "
            f"max normal {f.max_normal:.4g}, min normal {f.min_normal:.4g}, min subnormal {f.min_subnormal:.4g}, "
            f"epsilon {f.epsilon:.4g}",
            soft_wrap=True,
        )


_PLAN_MAX_ROWS, _PLAN_HEAD, _PLAN_TAIL = 60, 50, 5
_PLAN_HEADERS = {"model.preset": "model", "numerics.backend": "format", "optim.lr": "lr"}


def _flops(v: float) -> str:
    return f"{v:.3g}".replace("e+", "e")


def print_plan(plan: Any, console: Console | None = None) -> None:
    """A `SweepPlan` as a table (one row per trial; first 50 and last 5 beyond 60 trials) and a totals line; in
    adaptive mode, then its conditions and budget."""
    console = console or _out
    if plan.trials:
        _print_trials(plan, console)
    else:
        console.print(f"sweep {plan.name}: adaptive eta_c search -> {plan.root}")
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    if plan.search:
        print_search_plan(plan, console)


def _print_trials(plan: Any, console: Console) -> None:
    console.print(f"sweep {plan.name}: {len(plan.trials)} trials -> {plan.root}")
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    keys = [k for k in plan.axes if any(k in t.axes for t in plan.trials)]
    headers = [
        "trial",
        *(_PLAN_HEADERS.get(k, k.rsplit(".", 1)[-1]) for k in keys),
        "params",
        "FLOPs",
        "GPU-h",
    ]

    def row(trial: Any) -> list[str]:
        est = plan.estimates[trial.trial_id]
        axes = [_fmt(trial.axes.get(k)) for k in keys]
        return [trial.trial_id, *axes, _fmt(float(est.params)), _flops(est.flops), _fmt(est.gpu_hours)]

    trials = plan.trials
    elide = len(trials) > _PLAN_MAX_ROWS
    shown = [*trials[:_PLAN_HEAD], None, *trials[-_PLAN_TAIL:]] if elide else list(trials)
    rows = [row(t) if t is not None else None for t in shown]
    widths = [max(len(h), *(len(r[i]) for r in rows if r is not None)) for i, h in enumerate(headers)]
    keep = list(range(len(headers)))
    if sum(w + 3 for w in widths) > console.width:  # too narrow: drop the axis columns (the id holds them)
        keep = [0, *range(len(headers) - 3, len(headers))]
    for i in keep:  # values keep their width; a long trial id folds onto a second line instead
        right = i >= len(headers) - 3 or (0 < i <= len(keys) and keys[i - 1] in ("optim.lr", "seed"))
        justify = "right" if right else "left"
        if i == 0:
            table.add_column(headers[i], overflow="fold")
        else:
            table.add_column(headers[i], justify=justify, no_wrap=True, min_width=widths[i])
    for r in rows:
        if r is None:
            hidden = len(trials) - _PLAN_HEAD - _PLAN_TAIL
            table.add_row(f"... {hidden} more trials ...", *["..."] * (len(keep) - 1), style="dim")
        else:
            table.add_row(*(r[i] for i in keep))
    console.print(table)
    console.print(
        f"total: {len(trials)} trials, {_flops(plan.total_flops)} FLOPs, {_fmt(plan.total_gpu_hours)} GPU-hours "
        f"at {plan.mfu:.0%} MFU of {plan.peak_flops / 1e12:,.1f} TFLOP/s peak (upper bound: diverged trials stop early)"
    )


def print_search_plan(plan: Any, console: Console | None = None) -> None:
    """Adaptive mode: the conditions searched, the search settings and the budget (its upper bound)."""
    from robustprec.sweep.adaptive import budget, condition_estimate, settings_of

    console = console or _out
    s, b = settings_of(plan), budget(plan)
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, title="adaptive eta_c search")
    for h in ("condition", "grid trials", "max trials", "FLOPs", "GPU-h"):
        table.add_column(h, justify="left" if h == "condition" else "right", no_wrap=h != "condition")
    for c in plan.search["conditions"]:
        est = condition_estimate(c)
        table.add_row(
            c["label"],
            str(len(c["grid"])),
            str(s.max_trials),
            _flops(s.max_trials * est.flops),
            _fmt(s.max_trials * est.gpu_hours),
        )
    console.print(table)
    start = (
        "the sweep.lrs grid"
        if plan.trials
        else f"{s.coarse_points} log-spaced LRs x {s.seeds_per_point} seeds"
    )
    console.print(
        f"search: LR in [{s.lo:g}, {s.hi:g}], coarse stage {start}, then {s.seeds_per_point} fresh seeds per point "
        f"until CI upper/lower <= {s.target_ci_ratio:g} or {s.max_trials} trials per condition"
    )
    console.print(
        f"budget: at most {b['max_trials']} trials x {b['conditions']} conditions = {b['trials']} trials, "
        f"{_flops(b['flops'])} FLOPs, {_fmt(b['gpu_hours'])} GPU-hours at {plan.mfu:.0%} MFU "
        "(upper bound: a search stops at its target, diverged trials stop early)"
    )


def search_line(search: dict[str, dict[str, Any]], limit: int = 4) -> str:
    """Each condition's current eta_c and interval, e.g. `bf16 eta_c 3.1e-02 [2.2e-02, 4.0e-02] 12 trials`."""

    def one(label: str, e: dict[str, Any]) -> str:
        if e.get("value") is None:
            return f"{label} eta_c ?"
        lo, hi = e.get("ci") or (None, None)
        mark = {"above": ">", "below": "<"}.get(e.get("censored") or "", "")
        ci = f"[{_e(lo)}, {_e(hi)}]"
        done = " done" if e.get("done") else ""
        return f"{label} eta_c {mark}{_e(e['value'])} {ci} {e.get('trials', 0)} trials{done}"

    items = [one(k, v) for k, v in search.items()]
    more = f" · +{len(items) - limit} more" if len(items) > limit else ""
    return " · ".join(items[:limit]) + more


def _e(v: float | None) -> str:
    return "?" if v is None else f"{v:.2e}"


_STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "converged": "green",
    "diverged": "red",
    "error": "bold red",
}


class SweepProgress:
    """One live line of trial counts by status (a new line per change when not a TTY): pass as `progress`."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        from rich.live import Live

        self.total = total
        self.console = console or _err
        self._last: tuple[Any, ...] | None = None
        self._live = Live(console=self.console, refresh_per_second=2, transient=False)
        self._started = False

    def _line(self, state: dict[str, Any]) -> str:
        counts = state["counts"]
        parts = [f"[{_STATUS_STYLE.get(s, '')}]{s} {n}[/]" for s, n in counts.items()]
        recent = state["recent"]
        tail = f"  last: {recent[-1][0]} -> {recent[-1][1]}" if recent else ""
        search = f"\n  {search_line(state['search'])}" if state.get("search") else ""
        total = sum(counts.values()) if "search" in state else self.total
        return f"trials {total}: " + " · ".join(parts) + tail + search

    def __call__(self, state: dict[str, Any]) -> None:
        key = (tuple(state["counts"].items()), repr(state.get("search")))
        if self.console.is_terminal:
            if not self._started:
                self._live.start()
                self._started = True
            self._live.update(self._line(state))
        elif key != self._last:
            self.console.print(self._line(state), soft_wrap=True)
        self._last = key

    def close(self) -> None:
        if self._started:
            self._live.stop()
            self._started = False


def print_sweep_results(outcome: Any, console: Console | None = None) -> None:
    """The trials of a finished sweep (status, final eval loss, divergence step) and counts by status."""
    console = console or _out
    plan = outcome.plan
    rows = outcome.rows
    shown = [*rows[:_PLAN_HEAD], None, *rows[-_PLAN_TAIL:]] if len(rows) > _PLAN_MAX_ROWS else rows
    id_width = max((len(r["trial_id"]) for r in rows), default=5)
    table = Table(title=f"sweep {plan.name}", box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("trial", no_wrap=True, min_width=min(id_width, console.width // 2))
    table.add_column("status", no_wrap=True)
    table.add_column("final eval", justify="right", no_wrap=True)
    table.add_column("diverged at", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for r in shown:
        if r is None:
            table.add_row(
                f"... {len(rows) - _PLAN_HEAD - _PLAN_TAIL} more trials ...", "", "", "", "", style="dim"
            )
            continue
        status = r["status"]
        table.add_row(
            r["trial_id"],
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]",
            _fmt(r.get("final_eval_loss")),
            _fmt(r.get("diverged_at")),
            str(r.get("reason") or ""),
        )
    console.print(table)
    counts = " · ".join(f"{s} {n}" for s, n in outcome.counts.items() if n)
    verb = "resumed and finished" if outcome.resumed else "finished"
    console.print(f"{verb} in {outcome.wall_time_s:.0f} s: {counts}")


def print_sweep_header(plan: Any, console: Console | None = None) -> None:
    """Where the sweep lives, how big it is and the plan's notes, before it starts."""
    console = console or _out
    size = f"{len(plan.trials)} trials"
    if plan.search:
        size = f"adaptive eta_c search of {len(plan.search['conditions'])} condition(s), {size} so far"
    console.print(f"sweep: {plan.name} (plan {plan.fingerprint}, {size})")
    console.print(f"storage: {plan.root}")
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)


def print_tracking(info: dict[str, Any], console: Console | None = None) -> None:
    """The MLflow parent run of a sweep (or why there is none)."""
    console = console or _out
    if info.get("parent_run_id"):
        console.print(f"mlflow: parent run {info['parent_run_id']} in {info['tracking_uri']}")
    else:
        console.print(
            f"mlflow: not tracking ({info.get('error')}); `robustprec sync --sweep DIR` replays later"
        )


def print_sweep_footer(outcome: Any, console: Console | None = None) -> None:
    """Where the results are and what to run next."""
    console = console or _out
    root = Path(outcome.plan.root)
    console.print(f"records: {root / 'trials'}  table: {root / 'trials.parquet'}")
    if outcome.plan.search:
        console.print(f"eta_c search: {root / 'search.json'}")
    parent = outcome.tracking.get("parent_run_id")
    if parent:
        uri = outcome.tracking["tracking_uri"]
        console.print(f"mlflow ui --backend-store-uri {uri}    (parent run {parent})")
        if outcome.tracking.get("experiment_id"):
            from robustprec.tracking.mlflow_mirror import ui_link

            console.print(f"then open: {ui_link(outcome.tracking['experiment_id'], parent)}")
        console.print(f"next: robustprec analyze --run-id {parent} --tracking-uri {uri}")
    elif outcome.tracking.get("error"):
        console.print(f"MLflow was unreachable: robustprec sync --sweep {root}")
    console.print("re-run the same command to resume an interrupted sweep (finished trials are kept)")


def print_analysis(result: Any, console: Console | None = None) -> None:
    """Verdict per format with its evidence, then a compact table and where the report is."""
    console = console or _out
    data = result.data
    console.print(f"sweep {data['sweep']}: {data['trials']} trials, reference {data['reference']}")
    style = {"as_robust": "green", "less_robust": "red", "inconclusive": "yellow", "reference": "cyan"}
    for label, r in data["formats"].items():
        v = r["verdict"]
        # labels hold `[axis=value,...]`, which rich would take for markup
        console.print(
            f"[{style.get(v['category'], '')}]{escape(label)}[/]: {escape(v['words'])}", soft_wrap=True
        )
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    for name in ("format", "verdict", "eta_c", "censored", "eta_stable", "S"):
        table.add_column(name, no_wrap=True)
    for label, r in data["formats"].items():
        eta = r["eta_c"]
        table.add_row(
            escape(label),
            r["verdict"]["category"],
            _fmt(eta.get("value")),
            str(eta.get("censored") or "-"),
            _fmt(r.get("eta_stable")),
            _fmt(r["lr_sensitivity"].get("S")),
        )
    console.print(table)
    console.print(f"report: {result.out_dir / 'report.html'} (and report.md, analysis.json, plots)")
    if result.logged_to:
        console.print(f"logged to MLflow parent run {result.logged_to} (artifacts {result.artifact_path})")
