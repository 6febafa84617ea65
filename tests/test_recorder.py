"""The MLflow recorder (search/study/recorder.py): a record may name an earlier one that is still on its
way; stores that take concurrent writes get several writer threads, which hand records back in order."""

from __future__ import annotations

import pytest
from helpers import mlflow_server
from mlflow.tracking import MlflowClient

from search.study.recorder import CONCURRENT_WRITERS, Recorder, writers_for
from search.study.recording import RunRecord


def test_a_record_names_an_earlier_record_written_in_the_same_recorder(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = Recorder(uri)
    first = RunRecord("e", "first", {"order": "a,b"}, ref=("trial", 3))
    later = RunRecord("e", "later", {"order": "a,b"}, {"kind": "again"}, tag_refs={"lll.reevaluation_of": ("trial", 3)})
    unknown = RunRecord("e", "unknown", {"order": "b,a"}, tag_refs={"lll.reevaluation_of": ("trial", 99)})
    rec.submit_batch([("first", first), ("later", later)])  # both queued before either is written
    rec.submit("unknown", unknown)
    got = []
    while len(got) < 3:
        got += rec.done(wait=30)
    rec.close()
    ids = {w.token: w.run_id for w in got}
    assert all(w.error is None for w in got), got
    client = MlflowClient(uri)
    tags = client.get_run(ids["later"]).data.tags
    assert tags["lll.reevaluation_of"] == ids["first"] and tags["kind"] == "again"
    assert "lll.reevaluation_of" not in client.get_run(ids["unknown"]).data.tags


# ---- several writers: a real `mlflow server` ------------------------------------------------------
def test_only_stores_that_take_concurrent_writes_get_several_writers():
    assert writers_for("http://127.0.0.1:5000") == writers_for("https://mlflow.example") == CONCURRENT_WRITERS > 1
    assert writers_for("postgresql://u:p@db/mlflow") == writers_for("postgresql+psycopg2://db/m") == CONCURRENT_WRITERS
    assert writers_for("sqlite:///mlflow.db") == writers_for("file:///tmp/mlruns") == writers_for("mlruns") == 1
    assert writers_for(None) == 1


@pytest.mark.e2e
def test_many_records_through_several_writers_come_back_in_order_with_their_refs(tmp_path, request):
    """Batches of 1 to 5 records, some with a large artifact (slow) before small ones (fast), some
    naming a record of the same batch or an earlier one: ``done()`` hands back whole batches in
    submission order, every ref is the run id of the record it names, and every run is on the server."""
    url = mlflow_server(tmp_path, request, workers=2)
    rec = Recorder(url)
    assert rec.workers == CONCURRENT_WRITERS
    sizes = [3, 1, 5, 2, 4, 1, 5, 3, 2, 4]  # 30 records
    submitted, n = [], 0
    for size in sizes:
        batch = []
        for _ in range(size):
            blob = [("blobs", "big.bin", bytes(2_000_000))] if n % 7 == 0 else []  # slow: written last
            refs = {"lll.reevaluation_of": ("trial", n - 2)} if n % 3 == 2 else {}  # one or two records back
            batch.append(
                (n, RunRecord("many", f"r{n}", {"n": n}, {"n": str(n)}, files=blob, ref=("trial", n), tag_refs=refs))
            )
            n += 1
        rec.submit_batch(batch)
        submitted.append([t for t, _ in batch])
    chunks = []
    while sum(map(len, chunks)) < n:
        got = rec.done(wait=60)
        assert got, "nothing written within 60 s"
        chunks.append([w.token for w in got])
    rec.close()
    order = [t for c in chunks for t in c]
    assert order == list(range(n)), "records came back out of submission order"
    bounds = {sum(sizes[:i]) for i in range(len(sizes) + 1)}
    cut = 0
    for c in chunks:  # each done() ends on a batch boundary: batches come back whole
        cut += len(c)
        assert cut in bounds, (chunks, sizes)
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("many")
    runs = {r.data.params["n"]: r for r in client.search_runs([exp.experiment_id], max_results=100)}
    assert sorted(map(int, runs)) == list(range(n)), "a record was lost or written twice"
    ids = {int(k): r.info.run_id for k, r in runs.items()}
    for k, r in runs.items():
        k = int(k)
        assert r.info.status == "FINISHED"
        if k % 3 == 2:
            named = r.data.tags["lll.reevaluation_of"]
            assert named == ids[k - 2]
            assert client.get_run(named).info.end_time <= r.info.start_time, (
                "a record was written before the one it names"
            )
    assert rec.seconds >= rec.wall > 0  # several writes overlapped: summed thread time ≥ busy wall time
