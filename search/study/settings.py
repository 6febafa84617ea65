"""What a study stores: :class:`StudySettings`, the one definition, validated once.

`lll search` builds it from the flags of a new study; every later reader (resume, the driver,
recording, `lll export`, `lll report`, `lll affinity --study`) loads it back from the study with
:meth:`StudySettings.from_user_attrs` and reads typed fields, never a dict. The storage format is
one Optuna study user attribute per field (``lambda`` for :attr:`lam`, plus ``seeds_list``), the
format lll has always written, so older studies load; a study that cannot be read gives one
``error:`` line naming the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import TrainConfig
from tasks.errors import LLLError

Objective = Literal["acc", "bwt", "both"]
SamplerName = Literal["model", "tpe", "random"]

# Study user attributes that are the study's *state*, not its settings (written as the search goes).
# (and every key starting with "validation": held-out validation, search/study/validation.py)
STATE_KEYS = frozenset({"mlflow_parent_run_id", "graph_orderings", "affinity_evidence"})
# Settings that older studies do not store: the value those studies ran with.
LEGACY_DEFAULTS: dict[str, Any] = {
    "sampler": "tpe",  # before --sampler, every study searched with TPE
    "prune_startup": 8,  # before --prune-startup existed
    "population": "auto",  # before the study stored the lockstep population
    "lambda": None,
    "options": {},
    "fixed_order": None,
    "data_dir": None,
    "train_per_task": None,
    "test_per_task": None,
    "tracking_uri": None,
    "tracking_uri_masked": False,
    "max_seeds": None,  # before re-evaluation: every ordering kept its starting seeds
}


class StudySettings(BaseModel):
    """Everything a study's trials depend on, and where its MLflow runs live (URI masked)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    pool: str  # as the user named it (built-in name or YAML path)
    pool_spec: str  # the pool's spec as JSON: what workers build the pool from
    pool_fingerprint: str  # resume refuses a pool whose data or spec changed
    tasks: tuple[str, ...] = Field(min_length=1)  # the pool's task names (the Lehmer code's reference order)
    strategies: tuple[str, ...] = Field(min_length=1)
    lam: float | None = Field(None, alias="lambda", ge=0)  # fixed λ; None: searched per strategy
    options: dict[str, dict[str, Any]] = {}  # per strategy: its options
    objective: Objective
    sampler: SamplerName
    seeds: int = Field(ge=1)  # seeds a new candidate starts with (the objective is the mean over its seeds)
    max_seeds: int | None = Field(None, ge=1)  # re-evaluation: the most seeds any ordering gets (None: seeds)
    seed: int  # base seed of the sampler and of training (seeds are seed, seed+1, ...)
    train: TrainConfig
    population: int | Literal["auto"] = "auto"  # task-trainings a worker stacks (lockstep K)
    checkpoints: Literal["all", "final", "none"]
    prune: bool
    prune_startup: int = Field(ge=0)  # complete trials before pruning starts
    exhaustive: bool
    fixed_order: tuple[str, ...] | None = None  # --order: only strategy and λ are searched
    trials: int = Field(ge=1)
    data_dir: str | None = None
    train_per_task: int | None = Field(None, gt=0)
    test_per_task: int | None = Field(None, gt=0)
    tracking_uri: str | None = None  # masked when it holds a password (then tracking_uri_masked)
    tracking_uri_masked: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> StudySettings:
        if isinstance(self.population, int) and self.population < 1:
            raise ValueError("population must be at least 1 or 'auto'")
        if self.sampler == "model" and self.objective == "both":
            raise ValueError("the model sampler optimises one objective; objective 'both' needs tpe or random")
        if self.max_seeds is not None and self.max_seeds < self.seeds:
            raise ValueError(f"max_seeds ({self.max_seeds}) is below seeds ({self.seeds})")
        if self.fixed_order is not None and sorted(self.fixed_order) != sorted(self.tasks):
            raise ValueError("fixed_order must be an ordering of the pool's tasks")
        return self

    # ---- derived -----------------------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        """The training seeds of every candidate."""
        return [self.seed + k for k in range(self.seeds)]

    @property
    def racing(self) -> bool:
        """Re-evaluation is on: an ordering may get more seeds than it started with."""
        return self.max_seeds is not None and self.max_seeds > self.seeds

    @property
    def all_seeds(self) -> list[int]:
        """Every seed the search may train: the starting seeds, then the re-evaluation seeds."""
        return [self.seed + k for k in range(max(self.seeds, self.max_seeds or 0))]

    def strategy_options(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}) or {})

    def space(self):
        """The search space: ordering (unless fixed) × strategy × λ (unless fixed)."""
        from search.orders.space import SearchSpace

        fixed = list(self.fixed_order) if self.fixed_order is not None else None
        return SearchSpace(list(self.tasks), list(self.strategies), self.lam, fixed, dict(self.options))

    def changed(self, **changes: Any) -> StudySettings:
        """A validated copy with ``changes`` (what a resume may override: trials, population)."""
        return build(self.model_dump(), **changes)

    # ---- storage -----------------------------------------------------------------------------
    def to_user_attrs(self) -> dict[str, Any]:
        """One JSON value per study user attribute (the format lll has always stored)."""
        attrs = self.model_dump(mode="json", by_alias=True)
        attrs["seeds_list"] = ",".join(map(str, self.seed_list))
        if attrs["max_seeds"] is None:  # no re-evaluation: stored as before --max-seeds existed
            del attrs["max_seeds"]
        return attrs

    @classmethod
    def from_user_attrs(cls, attrs: dict[str, Any], study: str) -> StudySettings:
        """The settings a study stores, validated; any problem is one line naming the fix."""
        data = {k: v for k, v in attrs.items() if k not in STATE_KEYS and not k.startswith("validation")}
        stored_seeds = data.pop("seeds_list", None)
        missing = [k for k in cls.required_keys() if k not in data]
        if missing:
            raise LLLError(
                f"study {study!r} does not store {', '.join(missing)}: it was not made by `lll search` or by a "
                f"much older lll; start a new study (lll search --study NEW)"
            )
        data = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in data}, **data}
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            raise LLLError(
                f"study {study!r} stores settings this lll cannot read ({where}: {e['msg']}); "
                "open it with the lll version that wrote it, or start a new study (lll search --study NEW)"
            ) from None
        if stored_seeds is not None and str(stored_seeds) != ",".join(map(str, settings.seed_list)):
            raise LLLError(
                f"study {study!r} stores seeds_list {stored_seeds} but seed {settings.seed} × {settings.seeds} "
                "seeds; its settings were edited by hand — start a new study (lll search --study NEW)"
            )
        return settings

    @classmethod
    def required_keys(cls) -> list[str]:
        """Stored keys every readable study has (the rest have a legacy default)."""
        keys = [f.alias or name for name, f in cls.model_fields.items() if f.is_required()]
        return [k for k in keys if k not in LEGACY_DEFAULTS]


def build(data: dict[str, Any], **changes: Any) -> StudySettings:
    """Validate settings made by lll itself (a new study, a resume's overrides): a problem here is
    one line naming the setting."""
    try:
        return StudySettings.model_validate({**data, **changes})
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        raise LLLError(f"study settings: {where}: {e['msg']}; check the flag that sets it") from None
