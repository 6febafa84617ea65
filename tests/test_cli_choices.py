"""Every choice a flag offers comes from its registry: the real `lll ... --help` names every entry
of it, and a value outside it is one ``error:`` line naming every entry, with exit code 2.

The expected entries are read from the registries themselves (the discovered strategies, the
samplers, objectives and checkpoint modes of the Optuna side, the ordering rules, the built-in
pools and models, TrainConfig's allowed heads/optimizers/inits), so a new entry is checked too.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from helpers import lll

from pipeline.config import BUILTIN_MODELS, TrainConfig
from pipeline.strategies import PREFERRED_ORDER, STRATEGIES
from search.graph.rules import RULES
from search.study.storage import CHECKPOINTS, OBJECTIVES, SAMPLERS
from tasks.registry import BUILTIN_POOLS


def literal(field: str) -> list[str]:
    ann = TrainConfig.model_fields[field].annotation
    return [v for a in (ann, *get_args(ann)) if get_origin(a) is Literal for v in get_args(a)]


REGISTRY = {
    "strategies": list(STRATEGIES),
    "samplers": list(SAMPLERS),
    "objectives": list(OBJECTIVES),
    "checkpoints": list(CHECKPOINTS),
    "rules": list(RULES),
    "pools": list(BUILTIN_POOLS),
    "models": list(BUILTIN_MODELS),
    "heads": literal("heads"),
    "optimizers": literal("optimizer"),
    "inits": literal("init"),
}
# (command, flag) → the registry its choices come from
FLAGS = {
    ("run", "--pool"): "pools",
    ("run", "--strategy"): "strategies",
    ("run", "--model"): "models",
    ("run", "--heads"): "heads",
    ("run", "--optimizer"): "optimizers",
    ("run", "--init"): "inits",
    ("search", "--pool"): "pools",
    ("search", "--strategies"): "strategies",
    ("search", "--objective"): "objectives",
    ("search", "--checkpoints"): "checkpoints",
    ("search", "--sampler"): "samplers",
    ("search", "--model"): "models",
    ("search", "--heads"): "heads",
    ("search", "--optimizer"): "optimizers",
    ("affinity", "--pool"): "pools",
    ("affinity", "--strategy"): "strategies",
    ("affinity", "--rule"): "rules",
}
# (command, flag, bad value) → what the one error line says before it lists every entry
BAD = {
    ("run", "--pool", "mixed-mnsit"): "unknown pool 'mixed-mnsit'",
    ("run", "--strategy", "ewcc"): "unknown strategy 'ewcc'",
    ("run", "--model", "resnet"): "unknown model 'resnet'",
    ("run", "--heads", "many"): "unknown --heads 'many'",
    ("run", "--optimizer", "rmsprop"): "unknown --optimizer 'rmsprop'",
    ("run", "--init", "xavier"): "unknown --init 'xavier'",
    ("search", "--strategies", "ewc,nope"): "unknown strategy 'nope'",
    ("search", "--objective", "fwt"): "unknown --objective 'fwt'",
    ("search", "--checkpoints", "some"): "unknown --checkpoints 'some'",
    ("search", "--sampler", "bayes"): "unknown --sampler 'bayes'",
    ("affinity", "--strategy", "ewcc"): "unknown strategy 'ewcc'",
    ("affinity", "--rule", "shortest"): "unknown --rule 'shortest'",
}


def test_the_strategy_registry_is_every_strategy_module_in_the_preferred_order() -> None:
    modules = {p.stem for p in (Path(__file__).parent.parent / "pipeline" / "strategies").glob("*.py")}
    helpers = {"__init__", "base", "memory", "projection", "quadratic", "vae"}  # shared code, no strategy
    assert len(STRATEGIES) == len(modules - helpers) == 20
    ranked = [n for n in STRATEGIES if n in PREFERRED_ORDER]
    assert ranked == [n for n in PREFERRED_ORDER if n in STRATEGIES] == list(STRATEGIES)[: len(ranked)]


def option_help(text: str) -> dict[str, str]:
    """``--flag`` → its help text (the rows of rich's option box joined, box characters removed)."""
    helps: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        cells = line.strip().strip("│").strip()
        m = re.match(r"(--[\w-]+)", cells)
        if m:
            flag = m.group(1)
        if flag:
            helps[flag] = helps.get(flag, "") + " " + cells
    return {f: " ".join(h.split()) for f, h in helps.items()}


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, dict[str, str]]:
    cwd = tmp_path_factory.mktemp("choices")
    commands = sorted({c for c, _ in FLAGS})
    with ThreadPoolExecutor(max_workers=2) as ex:
        done = list(ex.map(lambda c: lll(c, "--help", cwd=cwd, timeout=180), commands))
    for res in done:
        assert res.returncode == 0, res.stderr
    return {c: option_help(res.stdout) for c, res in zip(commands, done, strict=True)}


@pytest.mark.parametrize("command, flag", list(FLAGS), ids=[f"{c} {f}" for c, f in FLAGS])
def test_help_names_every_entry_of_the_flags_registry(helps, command: str, flag: str) -> None:
    text = helps[command][flag]
    entries = REGISTRY[FLAGS[command, flag]]
    missing = [e for e in entries if not re.search(rf"(?<![\w-]){re.escape(e)}(?![\w-])", text)]
    assert not missing, f"`lll {command} --help` {flag} does not name {missing}: {text}"


def test_help_shows_the_defaults_as_written(helps) -> None:
    """``[default: ...]`` in a help text is shown, not swallowed as rich markup."""
    assert "[default: mixed-mnist]" in helps["search"]["--pool"]
    assert "[default: naive]" in helps["run"]["--strategy"]


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory) -> dict[tuple[str, str, str], subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("choices-bad")
    with ThreadPoolExecutor(max_workers=2) as ex:  # each fails while its flags are parsed: two at a time
        done = list(ex.map(lambda c: lll(*c, cwd=cwd, timeout=180), list(BAD)))
    return dict(zip(BAD, done, strict=True))


@pytest.mark.parametrize("case", list(BAD), ids=[" ".join(c) for c in BAD])
def test_a_value_outside_the_registry_is_one_line_naming_every_entry(bad_results, case) -> None:
    res = bad_results[case]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and BAD[case] in lines[0], lines[0]
    entries = REGISTRY[FLAGS[case[:2]]]
    listed = lines[0].split(BAD[case], 1)[1]
    assert all(re.search(rf"(?<![\w-]){re.escape(e)}(?![\w-])", listed) for e in entries), lines[0]
