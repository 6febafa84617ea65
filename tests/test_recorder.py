"""The MLflow recorder thread: a record may name an earlier one that is still on its way."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from search.study.recording import Recorder, RunRecord


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
