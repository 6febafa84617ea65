"""Commands started together on a fresh SQLite store (two `lll` commands in one folder, a search and
its `lll ui`): every one opens the storage; none fails with "unreachable or invalid".

The race is forced, not left to chance. Six processes meet at a barrier right before they open
the fresh store, and again inside it: each has found the store's alembic revision unset before
any of them stamps it. So every process but one stamps it a second time and hits IntegrityError,
every time, and only the retry in search/study/storage.py:open_storage (whose next attempt finds
the revision set) lets them all through.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

PROCESSES = 6


def _open(url: str, start, stamping, results) -> None:
    from optuna.storages._rdb.storage import _VersionManager

    from search.study.storage import open_storage

    stamp = _VersionManager._set_alembic_revision
    first = [True]

    def everyone_checked_then_stamp(self, revision: str) -> None:
        """Called by a process that found no revision: wait until all six are here, then write it."""
        if first[0]:
            first[0] = False
            stamping.wait(timeout=120)
        stamp(self, revision)

    _VersionManager._set_alembic_revision = everyone_checked_then_stamp
    start.wait()  # all at once: the schema-creation race
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # the LLLError the CLI would print
        results.put(f"{type(exc).__name__}: {exc}")


def race(url: str) -> list[str]:
    """What each of the processes opening ``url`` at once got: "ok" or its error."""
    ctx = mp.get_context("spawn")  # not fork: a fork of the test process's threads can hang a child
    start, stamping, results = ctx.Barrier(PROCESSES), ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, start, stamping, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    return [results.get(timeout=10) for _ in procs]


def test_commands_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    got = race(f"sqlite:///{tmp_path}/optuna.db")
    assert got == ["ok"] * PROCESSES, got
