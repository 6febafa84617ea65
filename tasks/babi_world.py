"""A small seeded world simulator that writes bAbI stories, so the QA family runs offline.

People move between places and pick up or drop objects; animals fear each other. Every answer
is read off the simulated world state when the question is asked, so it is correct by
construction; the supporting-fact ids are the lines that state came from. The wording follows
the real tasks (``tasks_1-20_v1-2/en``) closely, so a model trained on one sees familiar text in
the other, but the sentences are our own.

Generated tasks: 1 single supporting fact, 2 two supporting facts, 6 yes/no questions,
7 counting, 8 lists/sets, 9 simple negation, 10 indefinite knowledge, 15 basic deduction.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.babi_format import Line, Story, format_babi
from tasks.errors import LLLError

PEOPLE = ("Mary", "John", "Sandra", "Daniel")
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GRABS = ("got", "grabbed", "picked up", "took")
DROPS = ("dropped", "discarded", "put down", "left")
NUMBERS = ("none", "one", "two", "three")
SPECIES = {"mouse": "Mice", "sheep": "Sheep", "wolf": "Wolves", "cat": "Cats"}  # singular → plural
PLURAL_OBJECT = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "cat": "cats"}
ANIMAL_NAMES = ("Gertrude", "Winona", "Jessica", "Emily")
QUESTIONS_PER_STORY = 5


class Writer:
    """Numbers the lines of one story."""

    def __init__(self) -> None:
        self.lines: Story = []

    def say(self, text: str) -> int:
        self.lines.append(Line(len(self.lines) + 1, text))
        return len(self.lines)

    def ask(self, text: str, answer: str, support: list[int]) -> None:
        self.lines.append(Line(len(self.lines) + 1, text, answer, tuple(sorted(set(support)))))


def _other(rng: random.Random, options: tuple[str, ...], not_this: str) -> str:
    return rng.choice([o for o in options if o != not_this])


# ------------------------------------------------------------------------------------------------
# tasks 1 and 6: where is a person
# ------------------------------------------------------------------------------------------------
def _where_person(rng: random.Random, n_q: int, yes_no: bool) -> Story:
    w, at, said = Writer(), {}, {}
    for _ in range(n_q):
        for _ in range(2):
            p, place = rng.choice(PEOPLE), rng.choice(PLACES)
            said[p], at[p] = w.say(f"{p} {rng.choice(MOVES)} the {place}."), place
        p = rng.choice(sorted(at))
        if yes_no:
            place = at[p] if rng.random() < 0.5 else _other(rng, PLACES, at[p])
            w.ask(f"Is {p} in the {place}?", "yes" if place == at[p] else "no", [said[p]])
        else:
            w.ask(f"Where is {p}?", at[p], [said[p]])
    return w.lines


# ------------------------------------------------------------------------------------------------
# tasks 2, 7, 8: people carry objects around
# ------------------------------------------------------------------------------------------------
@dataclass
class ObjectWorld:
    """Who is where, who holds what, and which lines said so."""

    w: Writer = field(default_factory=Writer)
    at: dict[str, str] = field(default_factory=dict)  # person → place
    moved: dict[str, int] = field(default_factory=dict)  # person → line of their last move
    holding: dict[str, list[str]] = field(default_factory=dict)  # person → objects, in order taken
    holder: dict[str, str] = field(default_factory=dict)  # object → person holding it
    floor: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # object → (place, lines)
    took: dict[str, int] = field(default_factory=dict)  # object → line it was taken
    handled: dict[str, list[int]] = field(default_factory=dict)  # person → their take/drop lines

    def step(self, rng: random.Random, p_move: float = 0.4) -> None:
        p = rng.choice(PEOPLE)
        # Free objects: never placed, or lying where p is.
        takeable = [
            o for o in OBJECTS if o not in self.holder and (o not in self.floor or self.floor[o][0] == self.at.get(p))
        ]
        held = self.holding.get(p, [])
        r = rng.random()
        if r < p_move or (not takeable and not held):
            place = _other(rng, PLACES, self.at.get(p, ""))
            self.moved[p], self.at[p] = self.w.say(f"{p} {rng.choice(MOVES)} the {place}."), place
        elif held and (not takeable or r > p_move + (1 - p_move) / 2):
            o = rng.choice(held)
            line = self.w.say(f"{p} {rng.choice(DROPS)} the {o}.")
            held.remove(o)
            del self.holder[o]
            self.took.pop(o, None)
            if p in self.at:
                self.floor[o] = (self.at[p], [line, self.moved[p]])
            else:
                self.floor.pop(o, None)
            self.handled.setdefault(p, []).append(line)
        else:
            o = rng.choice(takeable)
            line = self.w.say(f"{p} {rng.choice(GRABS)} the {o}.")
            self.holding.setdefault(p, []).append(o)
            self.holder[o], self.took[o] = p, line
            self.floor.pop(o, None)
            self.handled.setdefault(p, []).append(line)

    def where(self, o: str) -> tuple[str, list[int]] | None:
        """The object's place and the lines that tell it, if the story has told it."""
        if o in self.holder:
            p = self.holder[o]
            return (self.at[p], [self.took[o], self.moved[p]]) if p in self.at else None
        return self.floor.get(o)


def _objects(rng: random.Random, n_q: int, kind: int) -> Story:
    world = ObjectWorld()
    asked = 0
    for _ in range(50 * n_q):
        if asked == n_q:
            break
        for _ in range(rng.randint(1, 3)):
            world.step(rng, p_move=0.5 if kind == 2 else 0.3)
        if kind == 2:
            known = [o for o in OBJECTS if world.where(o) is not None]
            if not known:
                continue
            o = rng.choice(known)
            place, support = world.where(o)  # type: ignore[misc]
            world.w.ask(f"Where is the {o}?", place, support)
        else:
            busy = sorted(world.handled)
            if not busy:
                continue
            p = rng.choice(busy)
            held = world.holding.get(p, [])
            # The takes of what p holds; holding nothing, p's last act was a drop.
            support = [world.took[o] for o in held] or world.handled[p][-1:]
            if kind == 7:
                world.w.ask(f"How many objects is {p} carrying?", NUMBERS[len(held)], support)
            else:
                world.w.ask(f"What is {p} carrying?", ",".join(held) or "nothing", support)
        asked += 1
    return world.w.lines


# ------------------------------------------------------------------------------------------------
# tasks 9 and 10: negation and indefinite knowledge
# ------------------------------------------------------------------------------------------------
def _negation(rng: random.Random, n_q: int, indefinite: bool) -> Story:
    """Task 9 (``indefinite=False``): "X is not in the P" / "X is no longer in the P".
    Task 10: "X is either in the P or the Q", answered with maybe."""
    w = Writer()
    state: dict[str, tuple[str, tuple[str, ...], int]] = {}  # person → (in|not|either, places, line)
    for _ in range(n_q):
        for _ in range(2):
            p = rng.choice(PEOPLE)
            r = rng.random()
            if r < 0.5:
                place = rng.choice(PLACES)
                text = f"{p} is in the {place}." if rng.random() < 0.5 else f"{p} {rng.choice(MOVES)} the {place}."
                state[p] = ("in", (place,), w.say(text))
            elif indefinite:
                a, b = rng.sample(PLACES, 2)
                state[p] = ("either", (a, b), w.say(f"{p} is either in the {a} or the {b}."))
            else:
                now = state.get(p)
                if now is not None and now[0] == "in" and rng.random() < 0.5:
                    place, text = now[1][0], f"{p} is no longer in the {now[1][0]}."
                else:
                    place = rng.choice(PLACES)
                    text = f"{p} is not in the {place}."
                state[p] = ("not", (place,), w.say(text))
        p = rng.choice(sorted(state))
        kind, places, line = state[p]
        if kind == "not":
            place, answer = places[0], "no"
        else:
            place = rng.choice(places) if rng.random() < 0.5 else rng.choice([x for x in PLACES if x not in places])
            inside = place in places
            answer = ("yes" if kind == "in" else "maybe") if inside else "no"
        w.ask(f"Is {p} in the {place}?", answer, [line])
    return w.lines


# ------------------------------------------------------------------------------------------------
# task 15: basic deduction
# ------------------------------------------------------------------------------------------------
def _deduction(rng: random.Random, n_q: int) -> Story:
    w = Writer()
    species = list(SPECIES)
    fears = {s: _other(rng, tuple(species), s) for s in species}
    kind_of = {n: rng.choice(species) for n in ANIMAL_NAMES}
    facts = [("fear", s) for s in species] + [("is", n) for n in ANIMAL_NAMES]
    rng.shuffle(facts)
    line_of: dict[tuple[str, str], int] = {}
    for what, x in facts:
        if what == "fear":
            line_of[(what, x)] = w.say(f"{SPECIES[x]} are afraid of {PLURAL_OBJECT[fears[x]]}.")
        else:
            line_of[(what, x)] = w.say(f"{x} is a {kind_of[x]}.")
    for name in rng.sample(ANIMAL_NAMES, min(n_q, len(ANIMAL_NAMES))):
        s = kind_of[name]
        w.ask(f"What is {name.lower()} afraid of?", fears[s], [line_of[("is", name)], line_of[("fear", s)]])
    return w.lines


MAKERS: dict[int, Callable[[random.Random, int], Story]] = {
    1: lambda rng, n: _where_person(rng, n, yes_no=False),
    2: lambda rng, n: _objects(rng, n, 2),
    6: lambda rng, n: _where_person(rng, n, yes_no=True),
    7: lambda rng, n: _objects(rng, n, 7),
    8: lambda rng, n: _objects(rng, n, 8),
    9: lambda rng, n: _negation(rng, n, indefinite=False),
    10: lambda rng, n: _negation(rng, n, indefinite=True),
    15: _deduction,
}
GENERATED_TASKS: tuple[int, ...] = tuple(MAKERS)


def generate_stories(task: int, n_questions: int, seed: int) -> list[Story]:
    """Stories of bAbI task ``task`` holding exactly ``n_questions`` questions in all."""
    if task not in MAKERS:
        raise LLLError(
            f"bAbI task {task} cannot be generated offline (the generator knows tasks "
            f"{', '.join(map(str, GENERATED_TASKS))}); use the real data (pool babi-20 with --data-dir)"
        )
    rng = random.Random(seed)
    per_story = 4 if task == 15 else QUESTIONS_PER_STORY
    stories: list[Story] = []
    left = n_questions
    while left > 0:
        story = MAKERS[task](rng, min(per_story, left))
        asked = sum(1 for ln in story if ln.is_question)
        if asked == 0:  # pragma: no cover - a simulator bug, not a user error
            raise RuntimeError(f"the task {task} simulator wrote a story without questions")
        left -= asked
        stories.append(story)
    return stories


def generate_text(task: int, n_questions: int, seed: int) -> str:
    """The same stories as :func:`generate_stories`, in the bAbI text format."""
    return format_babi(generate_stories(task, n_questions, seed))
