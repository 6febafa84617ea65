"""The README and docs/ point only at things that exist, and the module map names every module.

Docs go stale silently: a module moves, a heading is reworded, a bench output is renamed, and the
link still renders. These tests read README.md and docs/*.md as a reader follows them: every
relative link resolves to a file (and its #anchor to a heading there), every repository path the
text names (``bench/...``, ``search/...``, ``pipeline/...``, ``tasks/...``, ``tests/...``,
``docker/...``, ``examples/...``) exists, and docs/architecture.md's module map lists every module.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("tasks", "pipeline", "search", "bench")

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)
# A repository path in running text or code: starts at a top-level folder, not inside a URL or a
# longer path; ``<pool>`` placeholders are allowed and read as a wildcard.
PATH = re.compile(r"(?<![\w./<>-])((?:bench|search|pipeline|tasks|tests|docker|examples)/(?:[\w.*-]|/|<\w+>)*[\w*>])")
# Files a reader is told to create (e.g. `cp docker/.env.example docker/.env`), not shipped.
CREATED_BY_THE_READER = {"docker/.env"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for m in HEADING.finditer(text):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_relative_links_resolve() -> None:
    broken = []
    for md in DOCS:
        for m in LINK.finditer(md.read_text(encoding="utf-8")):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_named_paths_exist() -> None:
    checked, missing = 0, []
    for md in DOCS:
        for m in PATH.finditer(md.read_text(encoding="utf-8")):
            name = m.group(1).rstrip(".")
            if name in CREATED_BY_THE_READER:
                continue
            pattern = re.sub(r"<\w+>", "*", name)
            found = any(ROOT.glob(pattern)) if "*" in pattern else (ROOT / pattern).exists()
            checked += 1
            if not found:
                missing.append(f"{md.relative_to(ROOT)}: {name}")
    assert checked > 50, "the path pattern found almost nothing: is it still right?"
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_module_map_lists_every_module() -> None:
    """docs/architecture.md's map: each package's section names each of its modules (path inside the
    package, or the file name in backticks, as `strategies/`'s row lists its files). A module added
    without a row fails here: add the row."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.M)
    unmapped = []
    for pkg in PACKAGES:
        section = next((s for s in sections if s.startswith(f"{pkg}/")), "")
        assert section, f"docs/architecture.md has no '### {pkg}/' section"
        for py in sorted((ROOT / pkg).rglob("*.py")):
            rel = py.relative_to(ROOT / pkg).as_posix()
            if py.name in ("__init__.py", "__main__.py") and len(py.read_text().splitlines()) <= 10:
                continue  # a package marker, not a module with a job
            if f"`{rel}`" not in section and f"`{py.name}`" not in section:
                unmapped.append(f"{pkg}/{rel}")
    assert not unmapped, "modules missing from docs/architecture.md's module map (add a row):\n" + "\n".join(unmapped)


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260, "the README is for users: move detail into docs/"
    first_block = text.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()[1:3]] == ["make demo", "make test"]
