"""Commands started together on a fresh SQLite store (two `lll` commands in one folder, a search and
its `lll ui`): every one opens the storage; none fails with "unreachable or invalid"."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path


def _open(url: str, barrier, results) -> None:
    from search.study.storage import open_storage

    barrier.wait()  # all at once: the schema-creation race
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # the LLLError the CLI would print
        results.put(f"{type(exc).__name__}: {exc}")


def test_commands_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    failures = []
    for round_ in range(6):  # before the retry covered IntegrityError, about one round in three failed
        url = f"sqlite:///{tmp_path}/optuna-{round_}.db"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        failures += [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]
    assert not failures, failures
