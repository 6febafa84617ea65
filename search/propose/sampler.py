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
already finished, failed or pending is proposed again — until every ordering was tried: then the
least-measured finished one that no trial is training, which the driver trains on its next seed.
The first ``n_startup`` orderings are random
(distinct). Pruned trials count as the worst complete value. Single objective only.

Noise (issue 19): an ordering's value is its seed mean, adjusted for per-seed offsets; the GP's
noise term is one seed's variance, divided by each ordering's seed count, and learned from the
marginal likelihood together with the seeds' spread. Expected improvement is over the best posterior
mean, and :meth:`PermutationSampler.posterior` gives the posterior mean and sd of any orderings, what
the recommendation and the validation rank by.
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
from search.propose.gp import NOISES, NOISES_BEFORE, PermutationGP, concat, encode, expected_improvement
from search.propose.observations import fit_additive

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
        incumbent: str = "posterior",
        noise_aware: bool = True,
    ) -> None:
        """``incumbent``: "posterior" (the best posterior mean, issue 19) or "observed" (the best
        observed value, as before); ``noise_aware``: seed counts and the seeds' spread enter the GP's
        noise (False: one homoscedastic noise term, as before)."""
        self.tasks = list(tasks)
        self.seed = seed
        self.n_startup = n_startup
        self.use_graph = use_graph
        self.incumbent = incumbent
        self.noise_aware = noise_aware
        self._gp_cache: tuple | None = None
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
        """(finished {order: seed-adjusted mean value, maximised}, pending orders, orders never to
        propose again). See :meth:`observations`."""
        obs, pending, blocked = self.observations(study, current)
        return (obs.as_dict() if obs else {}), pending, blocked

    def observations(self, study: optuna.Study, current: int | None = None):
        """(:class:`Observations` of the finished orderings or None, pending orders, blocked orders).

        Each finished trial gives one value per seed: its user attribute ``seed_values``
        ({seed: objective value}) when the search records it — a re-evaluated ordering has several
        trials, whose seeds are merged — else its value, counted as ``n_seeds`` seeds (user
        attribute, default 1). Values are fitted as ordering + (strategy, seed) offset
        (``search/propose/observations.py``): in a study over several strategies each value is then
        taken relative to its strategy (ACC(order, s) ≈ μ_s + f(order)), otherwise the gap between
        strategies, several points, would drown the ordering's effect the GP has to learn; and a
        seed that is bad for every ordering does not make the orderings it was used on look bad.
        Pruned orderings count as one seed at the worst finished value."""
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        values: dict[tuple[str, ...], dict[Any, float]] = {}
        n_seeds: dict[Any, int] = {}
        pruned, pending, blocked = set(), set(), set()
        for t in study.get_trials(deepcopy=False):
            if t.number == current:
                continue
            order = self._order_of(t)
            if order is None:
                continue
            if t.state == TrialState.COMPLETE and t.values:
                strategy = t.params.get("strategy")
                per_seed = t.user_attrs.get("seed_values")
                got = values.setdefault(order, {})
                if per_seed:
                    got.update({(strategy, int(s)): sign * float(v) for s, v in per_seed.items()})
                else:  # the search's same seeds for every trial: one block per strategy
                    k = n_seeds.get((order, strategy), 0)
                    prev = got.get((strategy, "seed mean"), 0.0)
                    got[(strategy, "seed mean")] = (prev * k + sign * t.values[0]) / (k + 1)
                    n_seeds[(order, strategy)] = k + 1
                    n_seeds[order] = n_seeds.get(order, 0) + int(t.user_attrs.get("n_seeds", 1))
            elif t.state == TrialState.PRUNED:
                pruned.add(order)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.add(order)
            elif t.state == TrialState.FAIL and t.user_attrs.get("fail_reason", INTERRUPTED) != INTERRUPTED:
                blocked.add(order)
        if not values:
            return None, pending, blocked | pruned | pending
        obs = fit_additive(values)
        for i, o in enumerate(obs.orders):
            obs.count[i] = max(obs.count[i], n_seeds.get(o, 0))
        extra = sorted(pruned - set(values))
        if extra:
            worst = float(obs.mean.min())
            obs.orders += extra
            obs.mean = np.concatenate([obs.mean, np.full(len(extra), worst)])
            obs.count = np.concatenate([obs.count, np.ones(len(extra))])
        finished = set(obs.orders)
        return obs, pending - finished, blocked | finished | pending

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

    def _again(self, study: optuna.Study, number: int | None, obs) -> list[str] | None:
        """Every ordering tried: the finished one with the fewest seeds (then the best value) that
        no running or waiting trial trains — the driver then trains its next seed (a re-evaluation,
        search/study/driver.py) instead of a seed it has. None when all are busy."""
        live = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        busy = {self._order_of(t) for t in live if t.number != number}
        free = [i for i, o in enumerate(obs.orders) if o not in busy]
        if not free:
            return None
        return list(obs.orders[min(free, key=lambda i: (obs.count[i], -obs.mean[i], i))])

    def _random(self, rng: np.random.Generator, blocked: set) -> list[str]:
        if len(blocked) >= math.factorial(len(self.tasks)):  # every ordering tried: repeat one
            return [self.tasks[i] for i in rng.permutation(len(self.tasks))]
        for _ in range(10_000):
            order = [self.tasks[i] for i in rng.permutation(len(self.tasks))]
            if tuple(order) not in blocked:
                return order
        return order  # every ordering tried: a repeat is all that is left

    def fit(self, study: optuna.Study, number: int | None = None, got: tuple | None = None) -> Fitted | None:
        """The GP on the study's finished orderings (None before any finished); ``got``: what
        :meth:`observations` returned, when the caller has it."""
        obs, pending, blocked = got or self.observations(study, number)
        if obs is None:
            return None
        finished = obs.as_dict()
        model = self._graph_model(study, finished)
        orders, y, n = list(obs.orders), obs.mean.copy(), obs.count.copy()
        if len(orders) > MAX_POINTS:
            by_value = np.argsort(-y, kind="stable")[: MAX_POINTS // 2]
            recent = np.arange(len(orders))[-MAX_POINTS // 2 :]
            keep = sorted(set(by_value.tolist()) | set(recent.tolist()))
            orders, y, n = [orders[i] for i in keep], y[keep], n[keep]
        perms = np.array([self._perm(o) for o in orders])
        scale = None
        if model is not None:
            ref = model.predict_perms(perms)
            scale = (float(ref.mean()), float(ref.std()) or 1.0)
        fitted = Fitted(self, model, scale, orders, perms, y, n, pending, blocked)
        noise = (obs.ss_within, obs.dof_within) if self.noise_aware else (0.0, 0)
        key = (study._study_id, tuple(orders), y.tobytes(), n.tobytes(), noise, self._graph_key if model else None)
        if self._gp_cache is not None and self._gp_cache[0] == key:  # the same data: the same fit
            fitted.gp = self._gp_cache[1]
        else:
            fitted.gp = PermutationGP(
                encode(perms, fitted.graph_z(perms)),
                y,
                use_graph=model is not None,
                counts=n if self.noise_aware else None,
                within=noise,
                noises=NOISES if self.noise_aware else NOISES_BEFORE,
            )
            self._gp_cache = (key, fitted.gp)
        fitted.noise_sd = obs.noise_sd if obs.noise_sd is not None else fitted.gp.noise_sd
        return fitted

    def posterior(self, study: optuna.Study, orders: Sequence[Sequence[str]] | None = None) -> dict:
        """{order: (posterior mean, posterior sd, seeds)} of ``orders`` (default: every finished one),
        in the objective's units and direction (values relative to the strategy when several).
        What the recommendation and the validation rank by: the best posterior mean, not the best
        observed value, which is the one most inflated by selection."""
        fitted = self.fit(study)
        if fitted is None:
            return {}
        return fitted.posterior(orders, -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0)

    def propose(self, study: optuna.Study, number: int | None = None) -> list[str]:
        got = self.observations(study, number)
        rng = np.random.default_rng([self.seed, number or 0])
        if got[0] is not None and len(got[2]) >= math.factorial(len(self.tasks)):
            again = self._again(study, number, got[0])
            if again is not None:
                self.last_info = {"how": "every ordering tried: the least-measured one again"}
                return again
        if got[0] is None or len(got[0].orders) < self.n_startup:
            self.last_info = {"how": "random start-up"}
            return self._random(rng, got[2])
        fitted = self.fit(study, number, got)
        gp, y, perms, model = fitted.gp, fitted.y, fitted.perms, fitted.model
        # the incumbent: the best posterior mean (noise-aware), or today's best observed value
        best = float(gp.predict(gp.x)[0].max()) if self.incumbent == "posterior" else float(y.max())
        if fitted.pending:
            pp = np.array([self._perm(o) for o in sorted(fitted.pending)])
            xp = encode(pp, fitted.graph_z(pp))
            lie, _ = gp.predict(xp)
            gp = gp.with_data(concat(gp.x, xp), np.concatenate([y, lie]), np.concatenate([fitted.n, np.ones(len(pp))]))

        def score(p: np.ndarray) -> np.ndarray:
            mean, std = gp.predict(encode(p, fitted.graph_z(p)))
            return expected_improvement(mean, std, best)

        from search.orders.moves import local_search

        top = np.argsort(-y, kind="stable")[:5]
        starts = [perms[i] for i in top] + [rng.permutation(len(self.tasks)) for _ in range(5)]
        if model is not None:
            starts += [model.index([o])[0] for o in self._graph_top]
        excl = {tuple(int(i) for i in self._perm(o)) for o in fitted.blocked}
        found = local_search(score, starts, k=1, exclude=excl)
        if not found:
            self.last_info = {"how": "random (neighbourhoods exhausted)"}
            return self._random(rng, fitted.blocked)
        perm, ei = found[0]
        self.last_info = {"how": "expected improvement", "ei": ei, "hyper": gp.hyper, "n": len(y)}
        return [self.tasks[i] for i in perm]


class Fitted:
    """A GP fitted to a study's finished orderings, with what proposing and ranking need."""

    def __init__(self, sampler, model, scale, orders, perms, y, n, pending, blocked) -> None:
        self.sampler, self.model, self.scale = sampler, model, scale
        self.orders, self.perms, self.y, self.n = orders, perms, y, n
        self.pending, self.blocked = pending, blocked
        self.gp: PermutationGP | None = None
        self.noise_sd = 0.0

    def graph_z(self, p: np.ndarray) -> np.ndarray | None:
        """The graph model's standardised prediction (the GP's graph feature), or None."""
        if self.model is None:
            return None
        return (self.model.predict_perms(p) - self.scale[0]) / self.scale[1]

    def posterior(self, orders: Sequence[Sequence[str]] | None = None, sign: float = 1.0) -> dict:
        orders = [tuple(o) for o in (self.orders if orders is None else orders)]
        if not orders:
            return {}
        p = np.array([self.sampler._perm(o) for o in orders])
        mean, sd = self.gp.predict(encode(p, self.graph_z(p)))
        seen = dict(zip(self.orders, self.n, strict=True))
        return {o: (float(sign * m), float(s), int(seen.get(o, 0))) for o, m, s in zip(orders, mean, sd, strict=True)}
