"""The bAbI text format (Weston et al., 2015): read it, write it, find it on disk, download it.

Every line is ``<id> <text>``; ids count up from 1 and a line numbered 1 starts a new story. A
question line carries a tab-separated answer and the ids of its supporting facts::

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? \tbathroom\t1

Answers may be several words joined by commas (``apple,football``) or yes/no/maybe. The context
of a question is every statement of its story before it (earlier questions are not statements),
which is how end-to-end memory networks read the data.

The generator (``tasks/babi_world.py``) writes this same format, so generated and real data go
through one parser.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tasks.errors import LLLError

# File stems of the 20 tasks, as in tasks_1-20_v1-2/en/qa<N>_<stem>_{train,test}.txt
TASK_STEMS: dict[int, str] = {
    1: "single-supporting-fact",
    2: "two-supporting-facts",
    3: "three-supporting-facts",
    4: "two-arg-relations",
    5: "three-arg-relations",
    6: "yes-no-questions",
    7: "counting",
    8: "lists-sets",
    9: "simple-negation",
    10: "indefinite-knowledge",
    11: "basic-coreference",
    12: "conjunction",
    13: "compound-coreference",
    14: "time-reasoning",
    15: "basic-deduction",
    16: "basic-induction",
    17: "positional-reasoning",
    18: "size-reasoning",
    19: "path-finding",
    20: "agents-motivations",
}

ARCHIVE_DIR = "tasks_1-20_v1-2"
BABI_URL = "https://dl.fbaipublicfiles.com/babi/tasks_1-20_v1-2.tar.gz"
# SHA-256 of tasks_1-20_v1-2.tar.gz (15,719,851 bytes) as recorded by the Hugging Face `babi_qa`
# loader for the authors' original mirror; not verified from this machine (it has no internet).
BABI_SHA256 = "0364ebde659f14d11bc21744516c5ec49d3d06cb692733f66680771244998898"
URL_ENV = "LLL_BABI_URL"
SHA256_ENV = "LLL_BABI_SHA256"
WHERE_TO_GET = (
    f"get {ARCHIVE_DIR}.tar.gz from https://research.facebook.com/downloads/babi/ ({BABI_URL}) and unpack it "
    "there, pass --download when online, or use the generated pool babi-gen"
)


@dataclass(frozen=True)
class Line:
    """One line of a bAbI file: a statement, or a question when ``answer`` is set."""

    id: int
    text: str
    answer: str | None = None
    support: tuple[int, ...] = ()

    @property
    def is_question(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class QA:
    """One question with its context: the story's statements before it, as (line id, text)."""

    context: tuple[tuple[int, str], ...]
    question: str
    answer: str
    support: tuple[int, ...]

    @property
    def answer_words(self) -> tuple[str, ...]:
        """``"north,west"`` → ``("north", "west")``: the parts of a multi-word answer."""
        return tuple(self.answer.split(","))


Story = list[Line]


# ------------------------------------------------------------------------------------------------
# parse / write
# ------------------------------------------------------------------------------------------------
def parse_babi(text: str, where: str = "<text>") -> list[Story]:
    """Split bAbI text into stories. Malformed lines are an LLLError naming ``where`` and the line."""
    stories: list[Story] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        head, _, rest = line.lstrip().partition(" ")
        if not head.isdigit():
            raise LLLError(f"{where}:{n}: a bAbI line starts with its number, got {raw[:40]!r}; is this a bAbI file?")
        lid = int(head)
        if lid == 1:
            stories.append([])
        elif not stories or stories[-1][-1].id != lid - 1:
            prev = stories[-1][-1].id if stories else None
            raise LLLError(f"{where}:{n}: line number {lid} after {prev}; bAbI ids count up from 1 in each story")
        if "\t" in rest:
            parts = rest.split("\t")
            if len(parts) < 2 or not parts[1].strip():
                raise LLLError(f"{where}:{n}: a question line needs a tab and an answer after the question")
            support_field = parts[2].strip() if len(parts) > 2 else ""
            try:
                support = tuple(int(s) for s in support_field.split())
            except ValueError:
                raise LLLError(f"{where}:{n}: supporting-fact ids must be numbers, got {support_field!r}") from None
            stories[-1].append(Line(lid, parts[0].strip(), parts[1].strip(), support))
        else:
            stories[-1].append(Line(lid, rest.strip()))
    return stories


def questions(stories: Iterable[Story]) -> list[QA]:
    """Every question of every story, with the statements that precede it as its context."""
    out: list[QA] = []
    for story in stories:
        context: list[tuple[int, str]] = []
        for line in story:
            if line.is_question:
                out.append(QA(tuple(context), line.text, line.answer or "", line.support))
            else:
                context.append((line.id, line.text))
    return out


def format_babi(stories: Iterable[Story]) -> str:
    """The inverse of :func:`parse_babi` (question lines written as ``text\\tanswer\\tids``)."""
    lines = []
    for story in stories:
        for ln in story:
            if ln.is_question:
                lines.append(f"{ln.id} {ln.text}\t{ln.answer}\t{' '.join(map(str, ln.support))}")
            else:
                lines.append(f"{ln.id} {ln.text}")
    return "\n".join(lines) + "\n"


def read_babi_file(path: str | os.PathLike) -> list[QA]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise LLLError(f"cannot read bAbI file {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LLLError(f"{p} is not UTF-8 text; is it a bAbI file?") from None
    return questions(parse_babi(text, str(p)))


# ------------------------------------------------------------------------------------------------
# where the files are
# ------------------------------------------------------------------------------------------------
def task_dirs(root: Path, variant: str) -> list[Path]:
    """Folders that may hold ``qa*_*.txt``: the unpacked archive's, or ``root`` itself."""
    return [root / ARCHIVE_DIR / variant, root / variant, root]


def find_task_file(root: str | os.PathLike, variant: str, task: int, split: str) -> Path | None:
    base = Path(root).expanduser()
    for d in task_dirs(base, variant):
        hits = sorted(d.glob(f"qa{task}_*_{split}.txt"))
        if hits:
            return hits[0]
    return None


def require_task_file(root: str | os.PathLike, variant: str, task: int, split: str) -> Path:
    found = find_task_file(root, variant, task, split)
    if found is None:
        expected = Path(root).expanduser() / ARCHIVE_DIR / variant / f"qa{task}_{TASK_STEMS[task]}_{split}.txt"
        raise LLLError(f"bAbI file {expected} not found; {WHERE_TO_GET}")
    return found


# ------------------------------------------------------------------------------------------------
# download
# ------------------------------------------------------------------------------------------------
def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Only regular files and folders under the archive's own directory: never an absolute path,
    ``..``, or a link that could write outside ``dest``."""
    members = []
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()) or not str(target).startswith(str(dest.resolve())):
            raise LLLError(f"the bAbI archive holds an unsafe entry {m.name!r}; refusing to unpack it")
        members.append(m)
    return members


def download_babi(
    data_dir: str | os.PathLike,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the bAbI archive into ``data_dir``, check its SHA-256, unpack it; returns ``data_dir``.

    ``url`` and ``sha256`` default to the environment variables LLL_BABI_URL / LLL_BABI_SHA256,
    else the canonical archive. A file with the wrong checksum is deleted, so a bad download never
    poisons a later run.
    """
    url = url or os.environ.get(URL_ENV) or BABI_URL
    sha256 = (sha256 or os.environ.get(SHA256_ENV) or BABI_SHA256).lower()
    target = Path(data_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    archive = target / f"{ARCHIVE_DIR}.tar.gz"
    if not (archive.exists() and sha256sum(archive) == sha256):
        tmp = archive.with_suffix(".gz.part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            raise LLLError(
                f"could not download bAbI from {url} ({getattr(exc, 'reason', exc)}); you seem to be offline: "
                f"{WHERE_TO_GET}"
            ) from None
        got = sha256sum(tmp)
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise LLLError(
                f"checksum mismatch for {url} (sha256 {got}, expected {sha256}); the server sends a different "
                f"file: set {SHA256_ENV} if you trust it, or download it by hand"
            )
        tmp.replace(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar, target)
            if hasattr(tarfile, "data_filter"):  # Python ≥ 3.11.4: also let tarfile refuse odd entries
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover
                tar.extractall(target, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LLLError(f"cannot unpack {archive}: {exc}; delete it and download again") from None
    return target


# ------------------------------------------------------------------------------------------------
# words
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1 << 16)
def tokenize(text: str) -> tuple[str, ...]:
    """Lower-case words without the final punctuation: ``"Where is Mary?"`` → where, is, mary.
    Cached: a pool repeats the same few hundred sentences many thousands of times."""
    return tuple(text.lower().replace(".", " ").replace("?", " ").replace(",", " ").split())


def words_of(qas: Sequence[QA]) -> set[str]:
    out: set[str] = set()
    for qa in qas:
        out.update(tokenize(qa.question))
        for _, s in qa.context:
            out.update(tokenize(s))
    return out
