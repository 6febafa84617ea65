"""The embedded Optuna storage (search/study/journal.py): a journal file under ``flock``.

Real Optuna studies on real files, real processes killed with SIGKILL: a torn last line is never
read and never glued to the next one, a killed lock holder leaves no stale lock, several processes
share one file, and studies in an old ``sqlite:///optuna.db`` still load.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import LLL_ENV, lll, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.study import journal
from search.study.journal import FlockJournalBackend
from search.study.storage import DEFAULT_STORAGE, open_storage
from tasks.errors import LLLError

ROOT = Path(__file__).resolve().parents[1]


def _study(url: str, name: str = "j") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=open_storage(url), load_if_exists=True)


def _trials(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        t = study.ask()
        x = t.suggest_float("x", 0, 1)
        t.set_user_attr("order", ["a", "b"])
        study.tell(t, x)


def test_a_torn_last_line_is_not_read_and_is_cut_before_the_next_append(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path}/optuna.journal"
    study = _study(url)
    _trials(study, 3)
    path = tmp_path / "optuna.journal"
    whole = path.read_bytes()
    with path.open("ab") as f:  # what a writer killed inside write() leaves: half a line
        f.write(b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_st')
    again = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 3
    _trials(again, 1)  # the next writer drops the torn half before appending
    lines = path.read_bytes().splitlines()
    assert path.read_bytes().startswith(whole) and all(json.loads(x) for x in lines)
    fresh = optuna.load_study(study_name="j", storage=open_storage(url))
    assert len(fresh.trials) == 4 and fresh.trials[3].user_attrs["order"] == ["a", "b"]


def test_a_reader_waits_for_a_line_being_written(tmp_path: Path) -> None:
    backend = FlockJournalBackend(tmp_path / "j.journal")
    backend.append_logs([{"a": 1}, {"a": 2}])
    with open(tmp_path / "j.journal", "ab") as f:
        f.write(b'{"a":')  # another process is half way through its write
    assert list(backend.read_logs(0)) == [{"a": 1}, {"a": 2}]
    with open(tmp_path / "j.journal", "ab") as f:
        f.write(b"3}\n")
    assert list(backend.read_logs(2)) == [{"a": 3}]
    assert list(backend.read_logs(1)) == [{"a": 2}, {"a": 3}]


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b'{"op_code":4,"wor')  # killed mid-append, lock held
print("locked", flush=True)
time.sleep(600)
"""


def test_a_sigkilled_lock_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path}/optuna.journal"
    study = _study(url)
    _trials(study, 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "optuna.journal")], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.perf_counter()
    _trials(study, 2)  # the kernel released the lock with the process: no wait, no grace period
    assert time.perf_counter() - t0 < 5
    fresh = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.state for t in fresh.trials] == [TrialState.COMPLETE] * 3


WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
import optuna
from search.study.storage import open_storage
study = optuna.load_study(study_name="j", storage=open_storage(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    t = study.ask()
    study.tell(t, t.suggest_float("x", 0, 1))
"""


def test_old_sqlite_studies_still_load_and_the_default_is_the_journal(tmp_path: Path) -> None:
    assert DEFAULT_STORAGE.startswith("journal:///")
    url = f"sqlite:///{tmp_path}/optuna.db"
    _trials(_study(url, "old"), 2)
    assert len(optuna.load_study(study_name="old", storage=open_storage(url)).trials) == 2


def test_resuming_by_the_default_url_finds_a_study_of_the_old_default_sqlite_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _trials(_study("sqlite:///optuna.db", "before-the-journal"), 2)  # what `lll search` wrote before
    _trials(_study(DEFAULT_STORAGE, "new"), 1)
    old = open_storage(DEFAULT_STORAGE, "before-the-journal")  # `--study before-the-journal --resume`
    assert len(optuna.load_study(study_name="before-the-journal", storage=old).trials) == 2
    new = open_storage(DEFAULT_STORAGE, "new")
    assert len(optuna.load_study(study_name="new", storage=new).trials) == 1
    assert "before-the-journal" not in optuna.get_all_study_names(open_storage(DEFAULT_STORAGE))


def test_an_unwritable_journal_is_one_error_line(tmp_path: Path) -> None:
    """A journal whose folder is a file cannot be created by anyone (root included); a read-only
    folder stops everyone but root, so that case is checked only where it applies."""
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(LLLError, match="cannot be opened"):
        open_storage(f"journal:///{tmp_path}/not-a-folder/optuna.journal")
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # root may write anywhere
        with pytest.raises(LLLError, match="cannot be opened"):
            open_storage(f"journal:///{tmp_path}/ro/optuna.journal")


# ---- batches: one lock and one write per turn of the driver's loop ----------------------------------
def test_a_batch_of_asks_and_tells_is_one_append_that_others_see_only_when_it_ends(tmp_path: Path, monkeypatch) -> None:
    url = f"journal:///{tmp_path}/optuna.journal"
    study = _study(url)
    _trials(study, 2)
    path = tmp_path / "optuna.journal"
    before = path.read_bytes()
    backend = study._storage._backend  # the FlockJournalBackend: count its appends
    writes: list[bytes] = []
    real_write = backend._write
    monkeypatch.setattr(backend, "_write", lambda blob: writes.append(blob) or real_write(blob))
    with journal.batched(study):
        for _ in range(3):
            study.enqueue_trial({"x": 0.5})
        asked = [study.ask() for _ in range(3)]  # the enqueued trials: Optuna reads its own lines back
        assert [t.number for t in asked] == [2, 3, 4]
        _trials(study, 2)
        for t in asked:
            t.set_user_attr("order", ["b", "a"])
            study.tell(t, t.suggest_float("x", 0, 1))
        assert path.read_bytes() == before, "a batch wrote before it ended"
    assert len(writes) == 1 and path.read_bytes() == before + writes[0]
    fresh = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.state for t in fresh.trials] == [TrialState.COMPLETE] * 7
    assert [t.params["x"] for t in fresh.trials[2:5]] == [0.5] * 3 and fresh.trials[2].user_attrs["order"] == ["b", "a"]


BATCH_THEN_SLEEP = """
import sys, time
sys.path.insert(0, sys.argv[2])
import optuna
from search.study import journal
from search.study.storage import open_storage
study = optuna.load_study(study_name="j", storage=open_storage(sys.argv[1]))
with journal.batched(study):
    for _ in range(5):
        t = study.ask()
        t.set_user_attr("order", ["c"])
        study.tell(t, t.suggest_float("x", 0, 1))
    print("inside", flush=True)
    time.sleep(600)
"""


def test_a_sigkill_inside_a_batch_leaves_a_readable_journal_with_none_of_the_batch(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path}/optuna.journal"
    study = _study(url)
    _trials(study, 2)
    before = (tmp_path / "optuna.journal").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", BATCH_THEN_SLEEP, url, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inside"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "optuna.journal").read_bytes() == before
    t0 = time.perf_counter()
    _trials(study, 1)  # the lock went with the killed process; numbering goes on where the file left it
    assert time.perf_counter() - t0 < 5
    fresh = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.number for t in fresh.trials] == [0, 1, 2] and all(
        t.user_attrs["order"] == ["a", "b"] for t in fresh.trials
    )


BATCH_WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
import optuna
from search.study import journal
from search.study.storage import open_storage
study = optuna.load_study(study_name="j", storage=open_storage(sys.argv[1]))
for _ in range(int(sys.argv[2]) // 5):
    with journal.batched(study):
        for t in [study.ask() for _ in range(5)]:
            study.tell(t, t.suggest_float("x", 0, 1))
"""


@pytest.mark.parametrize("writer", [WRITER, BATCH_WRITER], ids=["one-by-one", "batched"])
def test_processes_sharing_one_journal_lose_no_trial(tmp_path: Path, writer: str) -> None:
    url = f"journal:///{tmp_path}/optuna.journal"
    _study(url)
    procs = [subprocess.Popen([sys.executable, "-c", writer, url, "25", str(ROOT)]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    trials = optuna.load_study(study_name="j", storage=open_storage(url)).trials
    assert len(trials) == 75 and sorted(t.number for t in trials) == list(range(75))
    assert all(t.state == TrialState.COMPLETE for t in trials)


# ---- a real search killed in the middle of a batch of tells ------------------------------------
POOL_YAML = tiny_pool_yaml("tiny-journal", 32, 32)
FAST = ["--strategies", "naive", "--seeds", "1", "--epochs", "1", "--hidden", "16", "--checkpoints", "none"]


def _search(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**LLL_ENV, **({"LLL_FAULT": fault} if fault else {})}
    cmd = [sys.executable, "-m", "search.cli", "search", "--pool", "pool.yaml", *FAST, "--validate", "0", *args]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a killed driver may leave Ray behind: end the group
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _by_order(study: optuna.Study) -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        out.setdefault(tuple(t.user_attrs["order"]), []).append(t)
    return out


@pytest.mark.extended
@pytest.mark.e2e
def test_sigkill_in_a_batch_of_tells_then_resume_loses_nothing_repeats_nothing(tmp_path: Path) -> None:
    """An exhaustive search (6 orderings, one worker at K=4: one request finishes several orderings,
    whose records come back as one batch) is SIGKILLed in a batch of tells, after its first tell and
    before its second: the batch is one append, so none of its tells is in the journal; the resume
    completes every ordering exactly once, in Optuna and in MLflow, with the R an uninterrupted
    search on the old SQLite storage gives, bit for bit."""
    (tmp_path / "pool.yaml").write_text(POOL_YAML)
    common = ["--exhaustive", "--workers", "1", "--population", "4"]
    killed = _search(tmp_path, *common, "--study", "k", fault="kill-on-index@after_record:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    storage = open_storage(f"journal:///{tmp_path}/optuna.journal")  # the default storage
    before = optuna.load_study(study_name="k", storage=storage).trials
    assert any(t.state == TrialState.RUNNING for t in before)  # the batch's tells did not go through
    # they are one append: its first tell (index 0) did not reach the journal either, so its first
    # two records are in MLflow and not told (the resume completes them from there)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("k")
    recorded = client.search_runs([exp.experiment_id], "tags.`lll.state` = 'complete'", max_results=100)
    told = {t.number for t in before if t.state == TrialState.COMPLETE}
    assert len({int(r.data.tags["optuna_trial_number"]) for r in recorded} - told) >= 2
    resumed = lll("search", "--study", "k", "--resume", "--validate", "0", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "recovered" in resumed.stdout

    study = optuna.load_study(study_name="k", storage=open_storage(f"journal:///{tmp_path}/optuna.journal"))
    done = _by_order(study)
    assert len(done) == 6 and all(len(ts) == 1 for ts in done.values()), "an ordering was lost or told twice"
    runs = client.search_runs([exp.experiment_id], "tags.`lll.state` = 'complete'", max_results=100)
    numbers = sorted(int(r.data.tags["optuna_trial_number"]) for r in runs)
    assert numbers == sorted(ts[0].number for ts in done.values()), "a finished trial was recorded twice or lost"

    ref = _search(tmp_path, *common, "--study", "ref", "--storage", f"sqlite:///{tmp_path}/ref.db")
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected = _by_order(optuna.load_study(study_name="ref", storage=f"sqlite:///{tmp_path}/ref.db"))
    got = {o: ts[0].user_attrs["R"] for o, ts in done.items()}
    assert got == {o: ts[0].user_attrs["R"] for o, ts in expected.items()}
