"""Fault injection for tests: make a real worker or driver process fail at a named point.

``fault_point(name, **ctx)`` does nothing unless the environment variable ``LLL_FAULT`` holds a
comma-separated list of rules ``<action>-on-<key>:<value>``. A rule fires when the point's context
has ``str(ctx[key]) == value``; ``<key>@<point>`` restricts it to the point called ``<point>``.
Actions: ``die`` (the process ends at once with ``os._exit(1)``, like a killed worker),
``kill`` (the process sends itself SIGKILL) and ``raise`` (a ``RuntimeError``, like a bug).
Points and their context today:

* ``train_unit`` (pipeline/units.py, a worker asked to train a unit): ``task`` = the unit's last
  task, ``order`` = the unit's ordering joined by ``,``.
* ``after_record`` (search/study/driver.py, the search driver): ``trial`` = the number of a trial that
  is recorded in MLflow and not yet told to Optuna — the window resume must handle, e.g.
  ``LLL_FAULT=kill-on-trial@after_record:2``; ``reevaluation`` = 1 for a re-evaluation
  (``kill-on-reevaluation@after_record:1``: the first re-evaluation recorded); ``index`` = its place
  among the trials told together (``kill-on-index@after_record:1``: after the first tell of a batch,
  before the second).

Examples: ``LLL_FAULT=die-on-task:noisy`` (a worker dies when asked to train ``noisy``),
``LLL_FAULT=raise-on-order@train_unit:upright,rot90``. Tests set it on the processes they start;
it costs one dict lookup when unset.
"""

from __future__ import annotations

import os
import signal


def _rules(spec: str) -> list[tuple[str, str, str | None, str]]:
    """(action, key, point or None, value) per rule; a value may itself contain commas only as the
    last rule (``order`` values), so rules split on ``,<action>-on-``."""
    rules, rest = [], spec.strip()
    while rest:
        head, _, value = rest.partition(":")
        action, _, key = head.partition("-on-")
        cut = min(
            (i for a in ("die-on-", "kill-on-", "raise-on-") if (i := value.find("," + a)) >= 0), default=len(value)
        )
        value, rest = value[:cut], value[cut + 1 :]
        key, _, point = key.partition("@")
        rules.append((action, key, point or None, value))
    return rules


def fault_point(name: str, **ctx: object) -> None:
    """Fail here if ``LLL_FAULT`` asks for it (see the module docstring); otherwise do nothing."""
    spec = os.environ.get("LLL_FAULT")
    if not spec:
        return
    for action, key, point, value in _rules(spec):
        if point not in (None, name) or key not in ctx or str(ctx[key]) != value:
            continue
        if action == "die":
            os._exit(1)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "raise":
            raise RuntimeError(f"injected fault at {name} ({key}={value})")
