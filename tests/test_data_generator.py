"""The offline generator: deterministic, persona-consistent, and the persona is what matters.

The oracles below quantify the design: knowing the persona's facts picks the true reply,
reading only the history is near chance (plus a modest leak from follow-up questions), and a
few support dialogues of a new persona reveal enough to answer its other dialogues.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable

import pytest

from metanb import MetanbError
from metanb.data import (
    Example,
    attribute_values,
    generate_persona_chat,
    group_by_persona,
    persona_attributes,
    persona_key,
    split_support_query,
    split_tasks,
)
from metanb.data.generator import SLOTS

M = 20


@pytest.fixture(scope="module")
def dialogues():
    return generate_persona_chat(personas=64, dialogues_per_persona=6, candidates=M, seed=1)


def accuracy(
    examples: Iterable[Example], score: Callable[[Example, str], float], seed: int = 0
) -> float:
    """Pick the best-scoring candidate, ties broken at random (so no information = chance)."""
    rng = random.Random(seed)
    hits = total = 0
    for ex in examples:
        scores = [score(ex, cand) for cand in ex.candidates]
        best = max(scores)
        hits += rng.choice([i for i, s in enumerate(scores) if s == best]) == ex.label
        total += 1
    return hits / total


def facts(texts: Iterable[str]) -> set[tuple[str, str]]:
    return set().union(*(attribute_values(t) for t in texts))


def test_same_seed_same_data_and_other_seed_other_data():
    args = dict(personas=5, dialogues_per_persona=2, candidates=6)
    first = generate_persona_chat(**args, seed=3)
    assert generate_persona_chat(**args, seed=3) == first
    assert generate_persona_chat(**args, seed=4) != first


def test_counts_shapes_and_distinct_personas(dialogues):
    assert len(dialogues) == 64 * 6
    assert all(len(d.examples) == 4 for d in dialogues)
    assert all(
        len(ex.candidates) == M == len(set(ex.candidates)) for d in dialogues for ex in d.examples
    )
    assert all(len(d.persona) in (4, 5) for d in dialogues)
    assert len({persona_key(d.persona) for d in dialogues}) == 64
    labels = Counter(ex.label for d in dialogues for ex in d.examples)
    assert len(labels) == M  # the true reply sits anywhere, not at a fixed position


def test_history_alternates_partner_and_true_replies(dialogues):
    for d in dialogues[:20]:
        for j, ex in enumerate(d.examples):
            assert len(ex.history) == 2 * j + 1
            if j:
                previous = d.examples[j - 1]
                assert ex.history[:-1] == (*previous.history, previous.response)


def test_true_replies_state_the_persona_and_distractors_contradict_or_ignore_it(dialogues):
    for d in dialogues:
        persona = set(persona_attributes(d.persona).items())
        assert len(persona) == len(d.persona)  # every persona sentence states one fact
        for ex in d.examples:
            assert attribute_values(ex.response) <= persona
            assert len(attribute_values(ex.response)) == 1
            for i, cand in enumerate(ex.candidates):
                if i != ex.label:
                    assert not attribute_values(cand) & persona


def test_attribute_values_are_shared_across_personas(dialogues):
    tasks = group_by_persona(dialogues)
    counts = Counter(f for t in tasks for f in persona_attributes(t.persona).items())
    assert max(counts.values()) >= 3
    assert sum(c > 1 for c in counts.values()) >= 20


def test_template_words_never_collide_with_attribute_values():
    value_words = {w for slot in SLOTS for v in slot.values for w in v.split()}
    for slot in SLOTS:
        assert len(slot.values) >= 24
        for template in (*slot.persona, *slot.ask, *slot.mention, *slot.statement, *slot.followup):
            assert not set(template.replace("{v}", "").split()) & value_words, template


def test_persona_oracle_is_right_and_history_only_reading_is_near_chance(dialogues):
    examples_with_persona = [(d.persona, ex) for d in dialogues for ex in d.examples]
    persona_of = {id(ex): set(persona_attributes(p).items()) for p, ex in examples_with_persona}
    examples = [ex for _, ex in examples_with_persona]

    oracle = accuracy(examples, lambda ex, c: len(attribute_values(c) & persona_of[id(ex)]))
    blind_facts = accuracy(examples, lambda ex, c: len(attribute_values(c) & facts(ex.history)))
    blind_words = accuracy(
        examples, lambda ex, c: len(set(c.split()) & set(" ".join(ex.history).split()))
    )
    assert oracle >= 0.95
    # follow-up questions repeat a fact from the history (as in ConvAI2): a modest leak only
    assert blind_facts <= 1 / M + 0.12
    assert blind_words <= 1 / M + 0.05
    first_turns = [d.examples[0] for d in dialogues]  # no history to leak from
    assert accuracy(first_turns, lambda ex, c: len(attribute_values(c) & facts(ex.history))) < 0.1


def test_what_other_personas_reveal_does_not_transfer_to_new_personas(dialogues):
    """A persona-blind learner of which facts are usually true stays near chance on new ones."""
    retrain, heldout = split_tasks(group_by_persona(dialogues), retrain=48, heldout=16, seed=0)
    prior: Counter = Counter()
    for ex in (ex for t in retrain for ex in t.examples):
        for i, cand in enumerate(ex.candidates):
            for fact in attribute_values(cand):
                prior[fact] += 1 if i == ex.label else -1 / (M - 1)
    held = [ex for t in heldout for ex in t.examples]
    assert accuracy(held, lambda ex, c: sum(prior[f] for f in attribute_values(c))) <= 1 / M + 0.05


def test_a_few_support_dialogues_reveal_a_new_persona():
    """What a per-persona adapter can learn: facts of the support replies answer the query."""
    tasks = group_by_persona(generate_persona_chat(16, 6, candidates=M, seed=2))
    hits = []
    for task in tasks:
        support, query = split_support_query(task, n_support=8, seed=0)
        known = facts(ex.response for ex in support)
        hits.append(accuracy(query, lambda ex, c, known=known: len(attribute_values(c) & known)))
    assert sum(hits) / len(hits) >= 0.85


def test_follow_up_rate_controls_the_leak():
    def leak(rate: float) -> float:
        data = generate_persona_chat(32, 4, candidates=M, seed=5, followup_rate=rate)
        examples = [ex for d in data for ex in d.examples]
        return accuracy(examples, lambda ex, c: len(attribute_values(c) & facts(ex.history)))

    assert leak(0.0) <= 1 / M + 0.03
    assert leak(0.5) > leak(0.0) + 0.2


def test_more_candidates_than_a_slot_has_values_fall_back_to_other_slots():
    (d,) = generate_persona_chat(1, 1, candidates=40, seed=0, turns=3)
    assert all(len(set(ex.candidates)) == 40 for ex in d.examples)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(personas=0), "personas=0"),
        (dict(dialogues_per_persona=0), "dialogues_per_persona=0"),
        (dict(candidates=1), "candidates=1"),
        (dict(candidates=1000), "candidates=1000"),
        (dict(turns=0), "turns=0"),
        (dict(followup_rate=1.5), "followup_rate=1.5"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(MetanbError, match=message):
        generate_persona_chat(**kwargs)


def test_random_distractors_are_other_personas_replies_and_keep_the_dialogues():
    """The ConvAI2-like control: same dialogues and true replies, distractors drawn from other
    personas' replies (never one stating the speaker's own facts), and the persona-blind
    reading of the partner's turn is no longer at chance."""
    same = generate_persona_chat(32, 4, candidates=M, seed=3)
    rand = generate_persona_chat(32, 4, candidates=M, seed=3, distractors="random")
    assert rand == generate_persona_chat(32, 4, candidates=M, seed=3, distractors="random")
    assert [(e.history, e.response) for d in same for e in d.examples] == [
        (e.history, e.response) for d in rand for e in d.examples]
    replies: dict[str, set] = {}
    for d in same:
        for ex in d.examples:
            replies.setdefault(ex.response, set()).add(d.persona)
    for d in rand:
        own = set(persona_attributes(d.persona).items())
        for ex in d.examples:
            assert len(set(ex.candidates)) == M
            for i, cand in enumerate(ex.candidates):
                if i != ex.label:
                    assert replies[cand] - {d.persona}  # another persona said it
                    assert not attribute_values(cand) & own
    # knowing only *what was asked* (the true reply's slot), not who answers, now picks it
    def asked(ex: Example, c: str) -> float:
        return len({s for s, _ in attribute_values(c)} & {s for s, _ in
                                                         attribute_values(ex.response)})

    later = [ex for d in rand for ex in d.examples[1:]]
    assert accuracy([ex for d in same for ex in d.examples[1:]], asked) <= 1 / M + 0.05
    assert accuracy(later, asked) >= 5 / M  # only a few of 19 random ones share its slot
    with pytest.raises(MetanbError, match="distractors='other' must be one of same-slot, random"):
        generate_persona_chat(2, 1, distractors="other")
