"""`lll search --sampler model`: an Optuna sampler that understands permutations.

TPE reads an ordering as Lehmer digits (``search/orders/lehmer.py``), whose distances say little about
how alike two orderings are. This sampler instead fits a Gaussian process on features of the
ordering itself (``search/propose/gp.py``: pairwise precedence — the Mallows kernel —, the first and
last task, and the affinity graph model's prediction when the study holds a measured graph) to the
study's finished trials, and proposes the ordering that maximises expected improvement, found by
local search over swaps and insertions from the best orderings so far (BOPS-H, Deshwal et al.).

It is an ordinary Optuna sampler: ``sample_relative`` returns the Lehmer digits (the search
space's own parameters, ``order_0..order_{T−2}``) of its proposal, and strategy/λ are delegated to
TPE (``sample_independent``), so storage, MLflow records, pruning, resume and export are
unchanged. Parallel workers get different proposals: trials still running or waiting (pending)
enter the GP with their posterior mean as value (constant liar / kriging believer), and no ordering
already finished, failed or pending is proposed again. The first ``n_startup`` orderings are random
(distinct). Pruned trials count as the worst complete value. Single objective only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.orders.lehmer import code_to_order, order_to_code, param_names
from search.propose.gp import PermutationGP, concat, encode, expected_improvement

INTERRUPTED = "interrupted"  # fail reason of an interrupted trial (a FAIL trial without one was interrupted too)
N_STARTUP = 5
MAX_POINTS = 300  # GP data cap: the best half and the most recent half beyond it


class PermutationSampler(optuna.samplers.BaseSampler):
    def __init__(
        self,
        tasks: Sequence[str],
        seed: int = 0,
        n_startup: int = N_STARTUP,
        use_graph: bool = True,
        independent: optuna.samplers.BaseSampler | None = None,
    ) -> None:
        self.tasks = list(tasks)
        self.seed = seed
        self.n_startup = n_startup
        self.use_graph = use_graph
        self.names = param_names(len(self.tasks))
        self._independent = independent or optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        self._graph_key: Any = None
        self._graph = None
        self._graph_top: list[list[str]] = []
        self.last_info: dict[str, Any] = {}

    # ---- Optuna interface --------------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        n = len(self.tasks)
        return {p: IntDistribution(0, n - 1 - i) for i, p in enumerate(self.names)}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or len(self.tasks) < 2:
            return {}
        self._raise_error_if_multi_objective(study)
        fixed = trial.system_attrs.get("fixed_params") or {}
        if all(p in fixed for p in self.names):  # an enqueued trial: its ordering is given
            return {}
        order = self.propose(study, trial.number)
        return dict(zip(self.names, order_to_code(order, self.tasks), strict=True))

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._independent.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    # ---- history -----------------------------------------------------------------------------
    def _order_of(self, t: FrozenTrial) -> tuple[str, ...] | None:
        params = dict(t.system_attrs.get("fixed_params") or {})
        params.update(t.params)
        if all(p in params for p in self.names):
            try:
                return tuple(code_to_order([int(params[p]) for p in self.names], self.tasks))
            except ValueError:
                return None
        order = t.user_attrs.get("order")
        return tuple(order) if order and sorted(order) == sorted(self.tasks) else None

    def history(self, study: optuna.Study, current: int | None = None):
        """(finished {order: value, maximised}, pending orders, orders never to propose again).

        In a study over several strategies each value is taken relative to its strategy's mean
        (ACC(order, s) ≈ μ_s + f(order)): otherwise the gap between strategies, several points,
        would drown the ordering's effect the GP has to learn."""
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        seen: list[tuple[tuple[str, ...], Any, float]] = []
        pruned, pending, blocked = set(), set(), set()
        for t in study.get_trials(deepcopy=False):
            if t.number == current:
                continue
            order = self._order_of(t)
            if order is None:
                continue
            if t.state == TrialState.COMPLETE and t.values:
                seen.append((order, t.params.get("strategy"), sign * t.values[0]))
            elif t.state == TrialState.PRUNED:
                pruned.add(order)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.add(order)
            elif t.state == TrialState.FAIL and t.user_attrs.get("fail_reason", INTERRUPTED) != INTERRUPTED:
                blocked.add(order)
        by_strategy: dict[Any, list[float]] = {}
        for _, strategy, v in seen:
            by_strategy.setdefault(strategy, []).append(v)
        centre = {k: float(np.mean(v)) if len(by_strategy) > 1 else 0.0 for k, v in by_strategy.items()}
        values: dict[tuple[str, ...], list[float]] = {}
        for order, strategy, v in seen:
            values.setdefault(order, []).append(v - centre[strategy])
        finished = {o: float(np.mean(v)) for o, v in values.items()}
        if finished:
            worst = min(finished.values())
            for o in pruned - set(finished):
                finished[o] = worst
        else:
            blocked |= pruned
        return finished, pending - set(finished), blocked | set(finished) | pending

    # ---- the graph model's prediction, when the study measured a graph ------------------------
    def _graph_model(self, study: optuna.Study, finished: dict[tuple[str, ...], float]):
        if not self.use_graph:
            return None
        kept = study.user_attrs.get("affinity_evidence")
        if not kept:
            return None
        key = (study._study_id, len(finished))
        if self._graph_key != key:
            from search.graph.affinity import build_graph
            from search.graph.evidence import Evidence
            from search.graph.model import GraphModel

            strategy = (kept.get("strategy") or {}).get("name") or ""
            g = build_graph(self.tasks, Evidence.from_dict(kept["evidence"]), meta={"strategy": strategy})
            self._graph = GraphModel.from_graph(g).fit(list(finished.items()))
            self._graph_key = key
            # its best orderings are local-search starts (exact ranking is cheap up to 8 tasks)
            self._graph_top = [o for o, _ in self._graph.top(k=3)[0]] if len(self.tasks) <= 8 else []
        return self._graph

    # ---- the proposal ------------------------------------------------------------------------
    def _perm(self, order: Sequence[str]) -> np.ndarray:
        pos = {a: i for i, a in enumerate(self.tasks)}
        return np.array([pos[a] for a in order], dtype=np.int64)

    def _random(self, rng: np.random.Generator, blocked: set) -> list[str]:
        if len(blocked) >= math.factorial(len(self.tasks)):  # every ordering tried: repeat one
            return [self.tasks[i] for i in rng.permutation(len(self.tasks))]
        for _ in range(10_000):
            order = [self.tasks[i] for i in rng.permutation(len(self.tasks))]
            if tuple(order) not in blocked:
                return order
        return order  # every ordering tried: a repeat is all that is left

    def propose(self, study: optuna.Study, number: int | None = None) -> list[str]:
        finished, pending, blocked = self.history(study, number)
        rng = np.random.default_rng([self.seed, number or 0])
        if len(finished) < self.n_startup:
            self.last_info = {"how": "random start-up"}
            return self._random(rng, blocked)
        model = self._graph_model(study, finished)
        orders = list(finished)
        y = np.array([finished[o] for o in orders])
        if len(orders) > MAX_POINTS:
            by_value = np.argsort(-y, kind="stable")[: MAX_POINTS // 2]
            recent = np.arange(len(orders))[-MAX_POINTS // 2 :]
            keep = sorted(set(by_value.tolist()) | set(recent.tolist()))
            orders, y = [orders[i] for i in keep], y[keep]
        perms = np.array([self._perm(o) for o in orders])

        def graph_z(p: np.ndarray) -> np.ndarray | None:
            if model is None:
                return None
            return (model.predict_perms(p) - g_mu) / g_sd

        if model is not None:
            ref = model.predict_perms(perms)
            g_mu, g_sd = float(ref.mean()), float(ref.std()) or 1.0
        gp = PermutationGP(encode(perms, graph_z(perms)), y, use_graph=model is not None)
        if pending:
            pp = np.array([self._perm(o) for o in sorted(pending)])
            xp = encode(pp, graph_z(pp))
            lie, _ = gp.predict(xp)
            gp = gp.with_data(concat(gp.x, xp), np.concatenate([y, lie]))
        best = float(y.max())

        def score(p: np.ndarray) -> np.ndarray:
            mean, std = gp.predict(encode(p, graph_z(p)))
            return expected_improvement(mean, std, best)

        from search.orders.moves import local_search

        top = np.argsort(-y, kind="stable")[:5]
        starts = [perms[i] for i in top] + [rng.permutation(len(self.tasks)) for _ in range(5)]
        if model is not None:
            starts += [model.index([o])[0] for o in self._graph_top]
        excl = {tuple(int(i) for i in self._perm(o)) for o in blocked}
        found = local_search(score, starts, k=1, exclude=excl)
        if not found:
            self.last_info = {"how": "random (neighbourhoods exhausted)"}
            return self._random(rng, blocked)
        perm, ei = found[0]
        self.last_info = {"how": "expected improvement", "ei": ei, "hyper": gp.hyper, "n": len(y)}
        return [self.tasks[i] for i in perm]
