"""The search's MLflow writer: :class:`RunRecord`\\ s written off the driver's critical path, handed back in order.

Why several writers: a trial's record is four store calls plus its artifacts; against an
``mlflow server`` that is about 100 ms of round trips per record, most of it waiting on the network
and the server, and one writer thread then caps a driver at ~10 records per second whatever the
cluster. Stores that take concurrent writes (``http(s)://`` servers, ``postgresql://``) get
:data:`CONCURRENT_WRITERS` threads; SQLite (one writer at a time) and file stores keep exactly one,
as before.

What the driver relies on, whatever the number of writers:

* ``done()`` returns whole batches in submission order (the records of trials that finished in one
  turn of the loop come back together, and the driver tells Optuna per batch, after MLflow);
* a record whose ``tag_refs`` name an earlier record (by its ``ref``) is written only after that
  one, and gets its run id; a ref no earlier record of this recorder carries is left out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from pipeline import tracking
from search.study.recording import RunRecord, write

# Writer threads for a store that takes concurrent writes. Four: `mlflow server` starts four
# workers by default and SQLAlchemy's pool (PostgreSQL) holds five connections; a record's ~100 ms
# of round trips at four in flight is ~40 records/s, 200 units/s at five tasks per ordering (issue 21).
CONCURRENT_WRITERS = 4
CONCURRENT_SCHEMES = ("http", "https", "postgresql")


def writers_for(uri: str | None) -> int:
    """How many threads may write to ``uri`` at once: one for SQLite, files and no MLflow."""
    scheme = (uri or "").split(":", 1)[0].split("+", 1)[0].lower()  # postgresql+psycopg2://
    return CONCURRENT_WRITERS if scheme in CONCURRENT_SCHEMES else 1


@dataclass
class Written:
    """A record the :class:`Recorder` finished: its owner's token, run id, or the error."""

    token: Hashable
    run_id: str | None
    error: str | None = None


@dataclass(eq=False)
class _Batch:
    out: list[Written | None]
    left: int


@dataclass
class _Item:
    batch: _Batch
    index: int
    seq: int
    token: Hashable
    rec: RunRecord
    deps: dict[str, int] = field(default_factory=dict)  # tag → seq of the earlier record it names


class Recorder:
    """Writer threads. ``submit_batch([(token, record), ...])``; ``done()`` returns what was written
    since the last call (whole batches, in order). ``uri=None`` records nothing (every record
    "writes" as None). ``workers``: default :func:`writers_for`."""

    def __init__(self, uri: str | None, workers: int | None = None) -> None:
        self.uri = uri
        self.workers = workers or writers_for(uri)
        self.todo: queue.Queue[_Item | None] = queue.Queue()
        self.cond = threading.Condition()
        self.batches: deque[_Batch] = deque()  # submitted, not handed back yet, in order
        self.queued = 0
        self.seq = 0
        self.last_seq: dict[Hashable, int] = {}  # ref → seq of the latest record submitted with it
        self.ids: dict[int, str | None] = {}  # seq → run id, for written records that carry a ref
        self.seconds = 0.0  # spent writing, summed over the threads: what recording costs, off the critical path
        self.wall = 0.0  # seconds with at least one write in flight
        self.cpu = 0.0  # this process's CPU seconds in the writes (the rest: waiting on the store)
        self.writing, self.since = 0, 0.0
        self.experiments: dict[str, str] = {}  # experiment ids, looked up once per search
        self.exp_lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, name=f"lll-recorder-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while (item := self.todo.get()) is not None:
            w = self._write(item)
            with self.cond:
                if item.rec.ref is not None:
                    self.ids[item.seq] = w.run_id
                item.batch.out[item.index] = w
                item.batch.left -= 1
                self.cond.notify_all()

    def _names(self, deps: dict[str, int]) -> dict[str, str]:
        """The run ids of the earlier records ``deps`` name, once they are written (FIFO hands
        them out first, so another thread is on each: no waiting in a circle)."""
        with self.cond:
            self.cond.wait_for(lambda: all(s in self.ids for s in deps.values()))
            return {tag: rid for tag, s in deps.items() if (rid := self.ids[s])}

    def _write(self, item: _Item) -> Written:
        rec = item.rec
        named = self._names(item.deps) if item.deps else {}
        if named:
            rec = replace(rec, tags={**rec.tags, **named})
        t0, c0 = self._started(), time.thread_time()
        try:
            if self.uri and rec.experiment not in self.experiments:
                with self.exp_lock:  # two threads creating one experiment: the second would fail
                    if rec.experiment not in self.experiments:
                        self.experiments[rec.experiment] = tracking.experiment_id(self.uri, rec.experiment)
            run_id = write(self.uri, rec, self.experiments) if self.uri else None
        except Exception as exc:
            return Written(item.token, None, f"{type(exc).__name__}: {exc}")
        finally:
            self._ended(t0, time.thread_time() - c0)
        return Written(item.token, run_id)

    def _started(self) -> float:
        with self.cond:
            now = time.perf_counter()
            if self.writing == 0:
                self.since = now
            self.writing += 1
            return now

    def _ended(self, t0: float, cpu: float) -> None:
        with self.cond:
            now = time.perf_counter()
            self.seconds += now - t0
            self.cpu += cpu
            self.writing -= 1
            if self.writing == 0:
                self.wall += now - self.since

    def submit(self, token: Hashable, rec: RunRecord) -> None:
        self.submit_batch([(token, rec)])

    def submit_batch(self, items: list[tuple[Hashable, RunRecord]]) -> None:
        if not items:
            return
        batch = _Batch([None] * len(items), len(items))
        with self.cond:
            self.batches.append(batch)
        self.queued += len(items)
        for i, (token, rec) in enumerate(items):
            self.seq += 1
            deps = {tag: self.last_seq[ref] for tag, ref in rec.tag_refs.items() if ref in self.last_seq}
            if rec.ref is not None:
                self.last_seq[rec.ref] = self.seq
            self.todo.put(_Item(batch, i, self.seq, token, rec, deps))

    def busy(self) -> bool:
        return self.queued > 0

    def done(self, wait: float = 0.0) -> list[Written]:
        """Records written since the last call (whole batches, in submission order); waits up to
        ``wait`` s for the first."""
        got: list[Written] = []
        deadline = time.monotonic() + wait
        with self.cond:
            while True:
                while self.batches and self.batches[0].left == 0:
                    got += self.batches.popleft().out  # type: ignore[arg-type]
                left = deadline - time.monotonic()
                if got or left <= 0:
                    break
                self.cond.wait(left)
        self.queued -= len(got)
        return got

    def close(self) -> None:
        for _ in self.threads:
            self.todo.put(None)
        for t in self.threads:
            t.join(timeout=60)
