"""The Ray Tune `Searcher` of an adaptive η_c sweep: one `EtaCSearch` per condition, driven by trial outcomes.

It runs in the driver (Tune's controller) and suggests `{"trial_id", "spec"}` configs for the sweep's trainable:
first the planned grid trials (a mixed sweep's coarse stage), then each condition's proposals as they come, each
turned into a TrialSpec that `LiveSearch` adds to the plan. Outcomes are read from the trial records. Resume is
Tune's: `Tuner.restore` restores this searcher's `save`d state together with the trial states of the same
snapshot; a search proposes the same points from the same outcomes, and a proposed trial whose record already
exists (it finished after the snapshot) is recorded without running again.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from robustprec.sweep.adaptive import LiveSearch, condition_estimate, live, new_search, search_trial
from robustprec.sweep.lr_search import EtaCSearch
from robustprec.sweep.spec import TrialSpec

OUTCOMES = ("converged", "diverged")
ENDED = (*OUTCOMES, "error")


class EtaCSearcher(Searcher):
    """Suggests the trials of every condition's η_c search of the sweep at `root` (see module doc)."""

    def __init__(self, root: str) -> None:
        super().__init__(metric=None, mode=None)
        self.root = root
        plan = live(root).plan
        self.conditions = [c["label"] for c in plan.search["conditions"]]
        self.searches: dict[str, EtaCSearch] = {
            c["label"]: new_search(plan, c) for c in plan.search["conditions"]
        }
        self.queue: list[str] = [t for c in plan.search["conditions"] for t in c["grid"]]
        self.running: dict[str, str] = {}  # Tune trial id -> sweep trial id
        self.done: set[str] = set()

    # ------------------------------------------------------------------------------- Tune's interface
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial to run: a queued one, else a condition's next proposal; FINISHED when all are done."""
        while (tid := self._next()) is not None:
            spec = self._spec(tid)
            status = _status(spec)
            if status in ENDED:  # finished before a restart: its record is the outcome, nothing re-runs
                self._record(spec, status)
                continue
            self.running[trial_id] = tid
            return {"trial_id": tid, "spec": spec.to_dict()}
        return Searcher.FINISHED if len(self.done) == len(self.conditions) else None

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        tid = self.running.pop(trial_id, None)
        if tid is None:
            return
        spec = self._spec(tid)
        status = _status(spec)
        if status not in ENDED and result and result.get("done"):
            status = "diverged" if result.get("diverged") else str(result.get("status", "converged"))
        self._record(spec, status)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict[str, Any]:
        return {
            "searches": {k: s.state_dict() for k, s in self.searches.items()},
            "queue": list(self.queue),
            "running": dict(self.running),
            "done": sorted(self.done),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for k, s in state["searches"].items():
            self.searches[k].load_state_dict(s)
        self.queue, self.running, self.done = list(state["queue"]), dict(state["running"]), set(state["done"])
        for label in self.conditions:
            self._publish(label)

    # ------------------------------------------------------------------------------- the search
    @property
    def _live(self) -> LiveSearch:
        return live(self.root)

    def _spec(self, tid: str) -> TrialSpec:
        plan = self._live.plan
        return next(t for t in reversed(plan.trials) if t.trial_id == tid)

    def _next(self) -> str | None:
        """Pop the next queued trial, asking the conditions (in plan order) for proposals when none is queued."""
        if not self.queue:
            for c in self._live.plan.search["conditions"]:
                if c["label"] not in self.done:
                    self.queue.extend(self._propose(c))
                if self.queue:
                    break
        return self.queue.pop(0) if self.queue else None

    def _propose(self, cond: dict[str, Any]) -> list[str]:
        search = self.searches[cond["label"]]
        batch = search.propose()
        if not batch and search.done():
            self.done.add(cond["label"])
            self._publish(cond["label"])
        ids = []
        for lr, seed in batch:
            spec = search_trial(self._live.plan, cond, lr, seed)
            self._live.add(spec, condition_estimate(cond))
            ids.append(spec.trial_id)
        return ids

    def _record(self, spec: TrialSpec, status: str) -> None:
        label = self._label(spec)
        search = self.searches[label]
        if status in OUTCOMES:
            search.record(float(spec.config["optim"]["lr"]), int(spec.config["seed"]), status == "diverged")
        else:
            search.lose()
        if search.done():
            self.done.add(label)
        self._publish(label)

    def _label(self, spec: TrialSpec) -> str:
        for c in self._live.plan.search["conditions"]:
            if spec.trial_id in c["grid"] or all(spec.axes.get(k) == v for k, v in c["axes"].items()):
                return str(c["label"])
        raise KeyError(f"trial {spec.trial_id!r} belongs to no condition of the search")

    def _publish(self, label: str) -> None:
        search = self.searches[label]
        if search.outcomes:
            self._live.publish(label, search.estimate(), len(search.outcomes), label in self.done)


def _status(spec: TrialSpec) -> str:
    from robustprec.sweep.run import trial_status

    return trial_status(spec)[0]
