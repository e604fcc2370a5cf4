"""Persona tasks: grouping by normalised persona, retraining/held-out splits, support/query."""

from __future__ import annotations

import pytest

from metanb import MetanbError
from metanb.data import (
    Dialogue,
    Example,
    PersonaTask,
    corpus_texts,
    generate_persona_chat,
    group_by_persona,
    split_support_query,
    split_tasks,
)


def dialogue(persona, n_examples=2, tag="x"):
    examples = [Example((f"{tag}{i}",), (f"a{i}", f"b{i}"), 0) for i in range(n_examples)]
    return Dialogue(tuple(persona), examples)


def test_personas_differing_in_case_spacing_or_order_are_one_task():
    a = dialogue(["I like tea .", "i have  a cat ."], tag="a")
    b = dialogue(["i have a cat .", "i like   TEA ."], tag="b")
    c = dialogue(["i like coffee ."], tag="c")
    tasks = group_by_persona([a, b, c])
    assert [len(t.dialogues) for t in tasks] == [2, 1]
    assert tasks[0].persona == a.persona  # the first spelling is kept
    assert tasks[0].key == "i have a cat .\ni like tea ."
    assert tasks[0].examples == a.examples + b.examples


def test_generated_personas_become_one_task_each():
    tasks = group_by_persona(generate_persona_chat(personas=6, dialogues_per_persona=3, seed=0))
    assert len(tasks) == 6
    assert all(len(t.dialogues) == 3 for t in tasks)


def make_tasks(n):
    return [PersonaTask(str(i), (f"p{i}",), [dialogue([f"p{i}"])]) for i in range(n)]


def test_split_tasks_is_disjoint_seeded_and_sized():
    tasks = make_tasks(10)
    retrain, heldout = split_tasks(tasks, retrain=6, heldout=3, seed=1)
    assert (len(retrain), len(heldout)) == (6, 3)
    assert not {t.key for t in retrain} & {t.key for t in heldout}
    assert split_tasks(tasks, 6, 3, seed=1) == (retrain, heldout)
    assert split_tasks(tasks, 6, 3, seed=2) != (retrain, heldout)
    rest = split_tasks(tasks, retrain=6, seed=1)[1]
    assert len(rest) == 4 and rest[:3] == heldout


def test_nested_split_fixes_the_heldout_personas_across_T():
    tasks = make_tasks(12)
    splits = {T: split_tasks(tasks, retrain=T, heldout=4, seed=3, nested=True) for T in (1, 4, 8)}
    keys = {T: ([t.key for t in r], [t.key for t in h]) for T, (r, h) in splits.items()}
    assert keys[1][1] == keys[4][1] == keys[8][1]  # the same new personas for every T
    assert keys[4][0] == keys[8][0][:4] and keys[1][0] == keys[4][0][:1]  # nested retraining sets
    assert not set(keys[8][0]) & set(keys[8][1])
    # the default (unnested) split moves the new personas when T changes
    assert [t.key for t in split_tasks(tasks, 4, 4, seed=3)[1]] != [
        t.key for t in split_tasks(tasks, 8, 4, seed=3)[1]]
    assert split_tasks(tasks, 8, 4, seed=4, nested=True)[1] != splits[8][1]
    with pytest.raises(MetanbError, match="nested=True needs"):
        split_tasks(tasks, retrain=4, nested=True)


def test_split_tasks_refuses_more_personas_than_exist():
    with pytest.raises(MetanbError, match="only 10 are available"):
        split_tasks(make_tasks(10), retrain=8, heldout=3)
    with pytest.raises(MetanbError, match="negative"):
        split_tasks(make_tasks(10), retrain=-1)


def task_with_dialogue_sizes(sizes):
    dialogues = [dialogue(["p ."], n, tag=f"d{k}-") for k, n in enumerate(sizes)]
    return PersonaTask("p .", ("p .",), dialogues)


def test_support_and_query_split_by_whole_dialogues():
    task = task_with_dialogue_sizes([3, 2, 4, 1, 5])
    support, query = split_support_query(task, n_support=4, seed=0)
    assert len(support) >= 4
    assert sorted(map(repr, support + query)) == sorted(map(repr, task.examples))
    support_dialogues = {ex.history[0].split("-")[0] for ex in support}
    query_dialogues = {ex.history[0].split("-")[0] for ex in query}
    assert not support_dialogues & query_dialogues
    # the support stops at the first dialogue that reaches n_support
    sizes = {f"d{k}": n for k, n in enumerate([3, 2, 4, 1, 5])}
    assert len(support) - max(sizes[d] for d in support_dialogues) < 4
    assert split_support_query(task, 4, seed=0) == (support, query)
    others = {tuple(map(repr, split_support_query(task, 4, seed=s)[0])) for s in range(8)}
    assert len(others) > 1  # the seed chooses which dialogues


def test_zero_support_keeps_everything_for_query():
    task = task_with_dialogue_sizes([2, 3])
    support, query = split_support_query(task, 0)
    assert support == []
    assert sorted(map(repr, query)) == sorted(map(repr, task.examples))


def test_support_that_leaves_no_query_is_refused():
    task = task_with_dialogue_sizes([2, 2])
    with pytest.raises(MetanbError, match="2 dialogues \\(4 examples\\)"):
        split_support_query(task, n_support=3)
    with pytest.raises(MetanbError, match="negative"):
        split_support_query(task, n_support=-1)


def test_corpus_texts_lists_each_text_once():
    d = Dialogue(
        ("p .",), [Example(("hi",), ("a", "b"), 0), Example(("hi", "a", "x"), ("a", "c"), 1)]
    )
    assert corpus_texts([d]) == ["p .", "hi", "a", "b", "x", "c"]
    assert corpus_texts([d], include_persona=False)[0] == "hi"
