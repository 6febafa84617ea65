"""The embedded Optuna storage: Optuna's JournalStorage on an append-only file of JSON lines.

Why not SQLite: every ask and tell is a dozen small transactions (a user attribute each), and the
RDB storage re-reads the study's trials through SQLAlchemy on each; measured in
bench/driver_ceiling.py the journal's ask and tell cost a fraction of SQLite's in WAL mode, with the
same promises:

* **SIGKILL-safe.** Writers take ``fcntl.flock`` on the file itself; the kernel releases it when
  the holder dies, so a killed search never leaves a stale lock (Optuna's own file backend uses a
  lock *file* that a SIGKILL leaves behind for 30 s). Each append is one ``write`` of whole lines.
  A line cut short (a writer killed inside ``write``, a full disk) is not read, and the next writer
  cuts it off before appending, so the file never holds a broken line between two good ones.
* **Several processes.** Readers take no lock and stop at the last complete line; every operation
  of JournalStorage first reads what other processes appended.
* **Batches.** Inside :func:`batched` (the driver's turn of asks, its tells, the exhaustive
  enqueue) the backend takes the lock once, keeps the lines Optuna appends in memory (serving them
  to its read-back, so a created trial's id is known) and appends them in ONE ``write`` at the end.
  A SIGKILL before that write loses the whole batch and nothing before it: as if the process had
  died before the batch's first operation (what is already in MLflow is completed on resume). A
  write torn by the kill leaves a prefix of the batch's operations, the state the unbatched code
  leaves when killed between them; the torn line is cut as above.
* **No fsync.** Like SQLite's WAL with ``synchronous=NORMAL`` (pipeline/tracking.py), a commit
  survives the process being killed, not a power cut; resume re-runs what a power cut dropped.

URL: ``journal:///FILE`` (relative, like ``sqlite:///FILE``) or ``journal:////abs/FILE``.
Only public Optuna API: a :class:`optuna.storages.journal.BaseJournalBackend` subclass.
"""

from __future__ import annotations

import fcntl
import json
import os
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

SCHEME = "journal:///"
BATCHING = True  # False: every operation its own lock and write (bench/journal_batch.py compares)


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:///FILE`` URL, else None."""
    return Path(url[len(SCHEME) :]) if url.startswith(SCHEME) else None


class FlockJournalBackend(BaseJournalBackend):
    """JSON lines in one file: appends under ``flock``, reads up to the last complete line."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        weakref.finalize(self, os.close, self.fd)
        self.offsets: dict[int, int] = {0: 0}  # log number → byte offset of its line
        self.last = 0  # highest log number whose offset is known
        self.depth = 0  # nested batch() contexts open
        self.pending: list[bytes] = []  # a batch's lines, not written yet
        self.read_all = False  # in a batch, the file was read to its end (nobody else appends now)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        if not (self.depth and self.read_all):  # under a batch's lock the file ends where we read it last
            yield from self._read_file(log_number_from)
            self.read_all = self.depth > 0
        for i in range(max(0, log_number_from - self.last), len(self.pending)):  # a batch's lines follow the file's
            yield json.loads(self.pending[i])

    def _read_file(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        start = min(log_number_from, self.last)
        offset = self.offsets[start]
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a torn last line (no newline yet, or ever) is left unread
        number = start
        for line in data[:end].splitlines(keepends=True):
            offset += len(line)
            number += 1
            if number > self.last:
                self.offsets[number], self.last = offset, number
            if number - 1 >= log_number_from:
                yield json.loads(line)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = [(json.dumps(log, separators=(",", ":")) + "\n").encode() for log in logs]
        if self.depth:
            self.pending += lines
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self._cut_torn_tail()
            self._write(b"".join(lines))
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _write(self, blob: bytes) -> None:
        view = memoryview(blob)
        while view:  # a regular file takes it in one write; loop on a short write all the same
            view = view[os.write(self.fd, view) :]

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the lock for the block and append its lines in one write when it ends (nested:
        the outermost block writes). An exception in the block still writes what Optuna already
        applied in memory, so the file and this process's view of it agree."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self._cut_torn_tail()
            self.depth, self.pending, self.read_all = 1, [], False
            yield
        finally:
            try:
                if self.pending:
                    self._write(b"".join(self.pending))
            finally:
                self.depth, self.pending, self.read_all = 0, [], False
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _cut_torn_tail(self) -> None:
        """Under the lock: a last line without its newline was cut short by a writer that died
        (nobody else writes now): drop it, so the next line does not glue onto it."""
        size = os.fstat(self.fd).st_size
        if size == 0 or os.pread(self.fd, 1, size - 1) == b"\n":
            return
        back = min(size, 1 << 16)
        while True:
            tail = os.pread(self.fd, back, size - back)
            cut = tail.rfind(b"\n")
            if cut >= 0 or back == size:
                os.ftruncate(self.fd, size - back + cut + 1)
                return
            back = min(size, back * 4)


def batched(study: Any) -> AbstractContextManager[Any]:
    """One lock and one write for the Optuna operations of the block when ``study`` is on the
    embedded journal; a no-op context for any other storage (SQLite, PostgreSQL)."""
    storage = getattr(study, "_storage", None)  # Optuna keeps a JournalStorage as given (no cache layer)
    backend = getattr(storage, "_backend", None) if isinstance(storage, JournalStorage) else None
    return backend.batch() if BATCHING and isinstance(backend, FlockJournalBackend) else nullcontext()


def open_journal(url: str) -> JournalStorage:
    """The JournalStorage of a ``journal:///FILE`` URL (the file is created when missing)."""
    path = journal_path(url)
    assert path is not None, url
    return JournalStorage(FlockJournalBackend(path))
