"""The data model of the language-model experiment, and how it becomes meta-learning tasks.

An :class:`Example` is one decision: a dialogue history, candidate next utterances and the
index of the true one. A :class:`Dialogue` is one conversation of one speaker (its persona and
its examples, in order). A :class:`PersonaTask` is every dialogue of one persona: the paper's
"task" t. Retraining uses some personas; the others are the new tasks, each split into a few
support dialogues (fine-tuning data) and the remaining query dialogues (evaluation).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from metanb.errors import MetanbError


@dataclass(frozen=True)
class Example:
    """One multiple-choice decision: which candidate is the speaker's next utterance."""

    history: tuple[str, ...]
    candidates: tuple[str, ...]
    label: int

    def __post_init__(self) -> None:
        if not 0 <= self.label < len(self.candidates):
            raise MetanbError(
                f"label {self.label} is not an index into {len(self.candidates)} candidates"
            )

    @property
    def response(self) -> str:
        """The true next utterance."""
        return self.candidates[self.label]


@dataclass
class Dialogue:
    """One conversation seen from one speaker: the persona it plays and its examples in order."""

    persona: tuple[str, ...]
    examples: list[Example]
    partner_persona: tuple[str, ...] = ()
    source: str = ""
    episode: int = 0


class Dialogues(list):
    """A ``list[Dialogue]`` that also says how many bad examples a lenient reader skipped.

    Readers return this so that ``read_parlai(...)`` is a plain list for every caller while
    ``skip_bad=True`` callers can still report ``result.skipped`` and ``result.problems``
    (the first problems, each ``file:line: what was wrong``).
    """

    MAX_PROBLEMS = 20

    def __init__(self, dialogues: Iterable[Dialogue] = ()) -> None:
        super().__init__(dialogues)
        self.skipped = 0
        self.problems: list[str] = []

    def note_skipped(self, problem: str) -> None:
        self.skipped += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(problem)


@dataclass
class PersonaTask:
    """Every dialogue of one persona: one task of the meta-learning problem."""

    key: str
    persona: tuple[str, ...]
    dialogues: list[Dialogue] = field(default_factory=list)

    @property
    def examples(self) -> list[Example]:
        """All examples of the task, dialogue by dialogue."""
        return [ex for dialogue in self.dialogues for ex in dialogue.examples]


def true_index(candidates: list[str], response: str) -> int | None:
    """Index of the true response among candidates; extra copies of it are removed in place.

    A copy of the true response would be a "distractor" identical to the answer, so only its
    last copy (where the released files put it) is kept. None when it is not a candidate.
    """
    positions = [i for i, cand in enumerate(candidates) if cand == response]
    if not positions:
        return None
    for i in reversed(positions[:-1]):
        del candidates[i]
    return positions[-1] - (len(positions) - 1)


def persona_key(persona: Sequence[str]) -> str:
    """The identity of a persona: lower-cased, whitespace-collapsed, sentences sorted.

    ConvAI2 repeats a persona across dialogues with its sentences in varying order (and the
    Hugging Face copy permutes them), so the order must not split one persona into several.
    """
    return "\n".join(sorted(" ".join(sentence.lower().split()) for sentence in persona))


def group_by_persona(dialogues: Iterable[Dialogue]) -> list[PersonaTask]:
    """Group dialogues into one :class:`PersonaTask` per persona, in order of first appearance.

    Dialogues without persona lines (the ``none_`` files) cannot be grouped: a
    :class:`MetanbError` says to use the ``self_`` or ``both_`` files instead.
    """
    tasks: dict[str, PersonaTask] = {}
    for dialogue in dialogues:
        if not dialogue.persona:
            where = f" ({dialogue.source}, episode {dialogue.episode})" if dialogue.source else ""
            raise MetanbError(
                f"a dialogue has no persona{where}, so it belongs to no persona task; "
                "use the self_/both_ files (not none_) or the offline generator"
            )
        key = persona_key(dialogue.persona)
        if key not in tasks:
            tasks[key] = PersonaTask(key=key, persona=tuple(dialogue.persona))
        tasks[key].dialogues.append(dialogue)
    return list(tasks.values())


def split_tasks(
    tasks: Sequence[PersonaTask], retrain: int, heldout: int | None = None, seed: int = 0,
    nested: bool = False,
) -> tuple[list[PersonaTask], list[PersonaTask]]:
    """Draw disjoint retraining and held-out personas (a seeded shuffle, then two slices).

    ``heldout=None`` keeps every persona not used for retraining. ``nested=True`` takes the
    held-out slice *first*: for one seed the new personas are then the same whatever
    ``retrain`` is, and the retraining personas of a smaller T are a prefix of a larger T's,
    so a sweep over T changes only the retraining set (the review's nested design). The
    default takes the retraining slice first, as every committed run did.
    """
    if retrain < 0 or (heldout is not None and heldout < 0):
        raise MetanbError(f"retrain={retrain} and heldout={heldout} must not be negative")
    if nested and heldout is None:
        raise MetanbError("nested=True needs a number of held-out personas (heldout=...)")
    wanted = retrain + (heldout if heldout is not None else 0)
    if wanted > len(tasks):
        raise MetanbError(
            f"asked for {retrain} retraining + {heldout} held-out personas but only "
            f"{len(tasks)} are available; ask for fewer or generate more personas"
        )
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    chosen = [tasks[i] for i in order]
    if nested:
        assert heldout is not None
        return chosen[heldout:heldout + retrain], chosen[:heldout]
    end = len(tasks) if heldout is None else retrain + heldout
    return chosen[:retrain], chosen[retrain:end]


def split_support_query(
    task: PersonaTask, n_support: int, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split a new task into support examples (fine-tuning) and query examples (evaluation).

    Whole dialogues go to one side, so no query example shares a conversation with the
    support set: dialogues are taken in a seeded random order until the support holds at
    least ``n_support`` examples (so it may hold up to one dialogue more), the rest is query.
    """
    if n_support < 0:
        raise MetanbError(f"n_support={n_support} must not be negative")
    order = list(range(len(task.dialogues)))
    random.Random(seed).shuffle(order)
    support: list[Example] = []
    taken = 0
    while len(support) < n_support and taken < len(order):
        support.extend(task.dialogues[order[taken]].examples)
        taken += 1
    query = [ex for i in order[taken:] for ex in task.dialogues[i].examples]
    if len(support) < n_support or not query:
        total = sum(len(d.examples) for d in task.dialogues)
        raise MetanbError(
            f"persona task has {len(task.dialogues)} dialogues ({total} examples): cannot take "
            f"{n_support} support examples by whole dialogues and keep a query dialogue; "
            "ask for fewer support examples or use personas with more dialogues"
        )
    return support, query


def corpus_texts(dialogues: Iterable[Dialogue], include_persona: bool = True) -> list[str]:
    """Every distinct text of the dialogues (persona sentences, turns, candidates), in order.

    What a word-level tokenizer's vocabulary is built from.
    """
    texts: dict[str, None] = {}
    for dialogue in dialogues:
        if include_persona:
            texts.update(dict.fromkeys(dialogue.persona))
        for ex in dialogue.examples:
            texts.update(dict.fromkeys(ex.history))
            texts.update(dict.fromkeys(ex.candidates))
    return list(texts)
