"""THE recording path (search/study/recording.py, pipeline/tracking.py): a search trial's run holds R.json
written from memory, and R.png is drawn when the search ends for the orderings a user looks at."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from pipeline import tracking
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.rmatrix import RMatrix
from search.study.outcome import TrialOutcome, trial_attrs
from search.study.recording import HEATMAP_TOP, StudyContext, log_heatmaps, trial_record, write
from search.study.settings import StudySettings

TASKS = ("a", "b", "c")
ORDERS = [("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"), ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]


def settings(trials: int) -> StudySettings:
    return StudySettings(
        pool="p", pool_spec="{}", pool_fingerprint="f", tasks=TASKS, strategies=("naive",), objective="acc",
        sampler="random", seeds=1, seed=0, train=TrainConfig(), checkpoints="none", prune=False,
        prune_startup=0, exhaustive=False, trials=trials,
    )  # fmt: skip


def outcome(number: int, order: tuple[str, ...], acc_scale: float) -> TrialOutcome:
    values = np.random.default_rng(number).random((4, 3)) * acc_scale
    r = RMatrix(order, values)
    metrics = {"acc": r.acc(), "bwt": r.bwt(), "fwt": r.fwt(), "forgetting": r.forgetting()}
    metrics |= {"acc_std": 0.0, "bwt_std": 0.0}
    sizes = [{"params": 10.0, "stored_bytes": 0.0}] * 3
    node = {"node_id": "n", "node_ip": "127.0.0.1"}
    return TrialOutcome(
        number, "complete", order, StrategyConfig(), None, (0,), r, metrics, (r.acc(),), node=node, sizes=sizes
    )


def test_trial_runs_hold_r_json_and_the_top_orderings_get_r_png_at_the_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    n = HEATMAP_TOP + 2
    st = settings(n)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    for k, v in st.to_user_attrs().items():
        study.set_user_attr(k, v)
    ctx, experiments, runs = StudyContext("s", None, st), {}, {}
    for i in range(n):
        o = outcome(i, ORDERS[i % len(ORDERS)], 0.5 + i / (2 * n))  # later trials: higher ACC
        run_id = write(uri, trial_record(ctx, o), experiments)
        runs[i] = (run_id, o.R)
        attrs = trial_attrs(replace(o, mlflow_run_id=run_id))
        dist = {"x": FloatDistribution(0, 1)}
        study.add_trial(create_trial(params={"x": 0.5}, distributions=dist, value=o.R.acc(), user_attrs=attrs))
    client = MlflowClient(uri)
    for run_id, r in runs.values():  # R.json from memory, same bytes as to_json; no R.png yet
        assert {a.path for a in client.list_artifacts(run_id)} == {"R.json"}
        got = client.download_artifacts(run_id, "R.json", str(tmp_path))
        assert Path(got).read_text() == r.to_json() and RMatrix.from_json(got).values.tolist() == r.values.tolist()
        assert client.get_run(run_id).data.params["order"] == ",".join(r.tasks)
    assert log_heatmaps(study, uri) == HEATMAP_TOP
    assert log_heatmaps(study, uri) == 0, "a second call (resume) draws nothing twice"
    best = sorted(runs, key=lambda i: -runs[i][1].acc())[:HEATMAP_TOP]
    for i, (run_id, r) in runs.items():
        names = {a.path for a in client.list_artifacts(run_id)}
        assert ("R.png" in names) == (i in best), (i, names)
        if i in best:  # the same picture a per-trial R.png held: R as recorded, its default title
            png = client.download_artifacts(run_id, "R.png", str(tmp_path / str(i)))
            assert Path(png).read_bytes() == r.heatmap_bytes()


def test_blobs_land_at_their_paths_in_a_local_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(uri, "e", "r")
    blobs = [("", "top.txt", b"1"), ("per_seed", "R_seed3.json", b"{}"), ("checkpoints/seed0", "final.pt", b"pt")]
    tracking.log_blobs(uri, run_id, blobs)
    client = MlflowClient(uri)
    got = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for d in ("per_seed", "checkpoints/seed0") for a in client.list_artifacts(run_id, d)
    }
    assert got >= {"top.txt", "per_seed/R_seed3.json", "checkpoints/seed0/final.pt"}
    assert Path(client.download_artifacts(run_id, "checkpoints/seed0/final.pt", str(tmp_path))).read_bytes() == b"pt"
