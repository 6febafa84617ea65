"""`lll export`: a study's recommended order as JSON (and, with --validate, its held-out check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.commands.common import err, open_study, out, parse_ints
from search.cli.options import HeldoutSeeds, Storage, StudyName


def export(
    study: StudyName,
    storage: Storage = "journal:///optuna.journal",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the recommendation JSON here")] = None,
    validate: Annotated[
        int | None, typer.Option(help="First retrain the top K orderings on held-out seeds (resumes a killed one)")
    ] = None,
    heldout_seeds: HeldoutSeeds = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers for --validate [default: one per CPU]")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI for --validate's runs [default: the study's]")
    ] = None,
) -> None:
    """Write the recommended task order of a study (with its Pareto alternatives) as JSON. A study
    validated on held-out seeds recommends the best held-out ordering (key "validation")."""
    import json

    from search.study.recommend import recommendation

    the_study = open_study(study, storage)
    if validate is not None:
        from search.study.validation import validation_lines

        block = run_validation(the_study, validate, parse_ints(heldout_seeds, "--heldout-seeds"), workers, tracking_uri)
        for line in validation_lines(block):
            err.print(line, markup=False, highlight=False, soft_wrap=True)
    rec = recommendation(the_study)
    text = json.dumps(rec, indent=2)
    if out_path is None:
        out.print_json(text)
    else:
        out_path.write_text(text)
        out.print(f"wrote {out_path}: {' → '.join(rec['order'])} ({rec['strategy']}), ACC {rec['acc'] * 100:.2f}")
        if rec.get("validation"):
            from search.study.validation import validation_lines

            for line in validation_lines(rec["validation"]):
                out.print(line, markup=False, highlight=False, soft_wrap=True)


def run_validation(study, k: int, seeds: list[int] | None, workers: int | None, uri: str | None) -> dict:
    """Check everything (K, held-out seeds, the pool unchanged), then validate on a local Ray."""
    from pipeline import tracking
    from search.study.cluster import connect
    from search.study.driver import Resources, worker_spec
    from search.study.storage import check_pool_unchanged, study_settings
    from search.study.validation import check_request, validate
    from tasks.errors import LLLError

    settings = study_settings(study)
    held = check_request(study, settings, k, seeds)
    check_pool_unchanged(study.study_name, settings, "validate with the same pool file and data")
    if uri is None:
        if settings.tracking_uri_masked:
            raise LLLError("this study logs to a password-protected tracking store; pass --tracking-uri")
        uri = settings.tracking_uri or tracking.DEFAULT_TRACKING_URI
    tracking.check_tracking_uri(uri)
    cpus = connect(None).get("CPU", 1)
    n = workers or max(1, int(cpus))
    res = Resources(workers=n, tracking_uri=uri)
    return validate(study, settings, k, held, worker_spec(settings, res), n, uri)
