"""bAbI pools: questions (generated or read from the real files) → one vocabulary → token tensors.

All tasks of a pool share one word vocabulary and one answer space, so sequential training sees
a fixed input and output space and forgetting is about the weights, not about a changing head.

An example is a LongTensor of shape (max_sentences + 1, max_words): rows 0..S-1 hold the story's
statements, most recent first (row 0 is the last statement before the question; at most
``MAX_MEMORY`` are kept, as in end-to-end memory networks), the last row holds the question.
Token 0 is padding. The label is the index of the whole answer string (``apple,football`` is one
answer) in the pool's answer list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from tasks.babi_format import (
    ARCHIVE_DIR,
    QA,
    WHERE_TO_GET,
    download_babi,
    find_task_file,
    parse_babi,
    questions,
    read_babi_file,
    require_task_file,
    tokenize,
    words_of,
)
from tasks.babi_world import generate_text
from tasks.errors import LLLError
from tasks.pool import PoolSpec, Task, TaskPool, TaskSpec, seed_from

MAX_MEMORY = 50  # statements kept per question (the most recent), as in Sukhbaatar et al. (2015)


@dataclass(frozen=True)
class Vocabulary:
    """Words (id i+1 ↔ ``words[i]``; 0 is padding) and answers (class k ↔ ``answers[k]``)."""

    words: tuple[str, ...]
    answers: tuple[str, ...]

    @classmethod
    def build(cls, qas: Iterable[QA]) -> Vocabulary:
        qas = list(qas)
        return cls(tuple(sorted(words_of(qas))), tuple(sorted({qa.answer for qa in qas})))

    @property
    def size(self) -> int:
        """Embedding rows needed, padding included."""
        return len(self.words) + 1

    def encode(self, qas: Sequence[QA], max_sentences: int, max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, max_sentences + 1, max_words) token ids and (N,) answer classes."""
        index = {w: i + 1 for i, w in enumerate(self.words)}
        answer_of = {a: k for k, a in enumerate(self.answers)}
        table: list[list[int]] = [[0] * max_words]  # row 0: an empty memory slot
        row_of: dict[str, int] = {}  # sentence → its row in ``table`` (stories repeat sentences)

        def row(text: str) -> int:
            if text not in row_of:
                ids = [index[w] for w in tokenize(text)]
                if len(ids) > max_words:
                    raise ValueError(f"sentence {text!r} has more than {max_words} words")
                row_of[text] = len(table)
                table.append(ids + [0] * (max_words - len(ids)))
            return row_of[text]

        slots = []
        for qa in qas:
            recent = [row(s) for _, s in qa.context[::-1][:max_sentences]]
            slots.append([*recent, *[0] * (max_sentences - len(recent)), row(qa.question)])
        x = torch.tensor(table, dtype=torch.long)[torch.tensor(slots, dtype=torch.long)]
        return x.view(len(qas), max_sentences + 1, max_words), torch.tensor(
            [answer_of[qa.answer] for qa in qas], dtype=torch.long
        )

    def decode(self, example: torch.Tensor) -> tuple[list[str], str]:
        """The statements (oldest first) and question an encoded example holds, as lower-case text."""

        def text(row: torch.Tensor) -> str:
            return " ".join(self.words[int(i) - 1] for i in row if int(i) != 0)

        statements = [text(r) for r in example[:-1] if bool((r != 0).any())]
        return statements[::-1], text(example[-1])


def task_seed(pool: PoolSpec, task: TaskSpec) -> int:
    return task.seed if task.seed is not None else seed_from(pool.seed, task.name)


def _subsample(qas: list[QA], n: int, seed: int) -> list[QA]:
    """A seeded sample of at most ``n`` questions, kept in file order."""
    if len(qas) <= n:
        return qas
    idx = torch.randperm(len(qas), generator=torch.Generator().manual_seed(seed))[:n]
    return [qas[i] for i in sorted(idx.tolist())]


def task_questions(pool: PoolSpec, task: TaskSpec, data_dir: str | None, download: bool) -> tuple[list[QA], list[QA]]:
    """Train and test questions of one task, generated (``babi-gen``) or read (``babi``)."""
    k, seed = int(task.babi_task or 0), task_seed(pool, task)
    if pool.source == "babi-gen":
        # Through the same text format and parser as the real files.
        parts = []
        for split, n in (("train", pool.train_per_task), ("test", pool.test_per_task)):
            text = generate_text(k, n, seed_from(seed, split))
            parts.append(questions(parse_babi(text, f"generated qa{k} {split}")))
        return parts[0], parts[1]
    if data_dir is None:
        raise LLLError(
            f"pool {pool.name!r} reads the real bAbI data: pass --data-dir DIR (a folder holding {ARCHIVE_DIR}/); "
            f"{WHERE_TO_GET}"
        )
    if download and find_task_file(data_dir, pool.babi_variant, k, "train") is None:
        download_babi(data_dir)
    train = read_babi_file(require_task_file(data_dir, pool.babi_variant, k, "train"))
    test = read_babi_file(require_task_file(data_dir, pool.babi_variant, k, "test"))
    return (
        _subsample(train, pool.train_per_task, seed_from(seed, "train")),
        _subsample(test, pool.test_per_task, seed_from(seed, "test")),
    )


def build_babi_pool(spec: PoolSpec, data_dir: str | None = None, download: bool = False) -> TaskPool:
    """Every task's questions, one shared vocabulary and answer space, then the tensors."""
    raw = {t.name: task_questions(spec, t, data_dir, download) for t in spec.tasks}
    every = [qa for train, test in raw.values() for qa in (*train, *test)]
    vocab = Vocabulary.build(every)
    max_sentences = max(1, min(MAX_MEMORY, max(len(qa.context) for qa in every)))
    max_words = max(len(tokenize(s)) for qa in every for s in (qa.question, *(c for _, c in qa.context)))
    tasks: dict[str, Task] = {}
    for t in spec.tasks:
        train, test = raw[t.name]
        xtr, ytr = vocab.encode(train, max_sentences, max_words)
        xte, yte = vocab.encode(test, max_sentences, max_words)
        task_spec = {
            "name": t.name,
            "source": spec.source,
            "babi_task": t.babi_task,
            "variant": spec.babi_variant if spec.source == "babi" else None,
            "seed": task_seed(spec, t),
            "pool_seed": spec.seed,
            "train": len(ytr),
            "test": len(yte),
        }
        tasks[t.name] = Task(t.name, xtr, ytr, xte, yte, len(vocab.answers), task_spec)
    meta = {
        "kind": "text",
        "vocab_size": vocab.size,
        "max_sentences": max_sentences,
        "max_words": max_words,
        "words": list(vocab.words),
        "answers": list(vocab.answers),
    }
    where = "generated offline" if spec.source == "babi-gen" else f"bAbI {spec.babi_variant} from {data_dir}"
    note = f"{where}: {len(vocab.words)} words, {len(vocab.answers)} answers, up to {max_sentences} statements"
    return TaskPool(spec, tasks, note=note, meta=meta)
