"""Persona clusters as tasks, cut exactly as the paper's language experiment cuts them.

The paper (``jacob-block/peft-ml``, ``convai/conv_utils.py``, after PAML) does not use single
personas as tasks but PAML's K-means clusters of personas:

1. dialogues are grouped by persona (:func:`~metanb.data.persona_map.paml_persona`), personas
   in order of first appearance, each persona's dialogues in file order;
2. each persona goes to its cluster in the map (the last one listing it); a persona the map
   does not list goes to cluster 0, and a cluster's dialogues are its personas' in that order;
3. clusters with at most one dialogue are dropped, then cluster 0 is deleted (with the
   unmapped personas it deletes PAML's own cluster 0: the paper does so, and so do we);
4. the last ``n_heldout`` dialogues of each cluster are held out (retraining validation: 3;
   new tasks' query set: 2), and tasks are sorted by the number of examples *left for
   training*, largest first (``numpy.flip(numpy.argsort(...))``, ties as numpy breaks them);
5. the retraining tasks are the 10 largest train clusters, the new tasks the 10 largest valid
   clusters.

One departure: the paper's reader never stores the last episode of a file (it only stores an
episode when the next one starts); ours keeps it, so one cluster may hold one dialogue more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from metanb.data.persona_map import Persona, paml_persona, persona_index
from metanb.data.tasks import Dialogue, Example
from metanb.errors import MetanbError

PAPER_RETRAIN_TASKS = 10
PAPER_NEW_TASKS = 10
PAPER_VALIDATION_DIALOGUES = 3
PAPER_QUERY_DIALOGUES = 2
UNMAPPED_CLUSTER = 0


@dataclass
class Clustering:
    """Dialogues assigned to map clusters (official order), and those the map does not know."""

    clusters: dict[int, list[Dialogue]] = field(default_factory=dict)
    unmapped: list[Dialogue] = field(default_factory=list)
    unmapped_personas: int = 0

    def dialogues_per_cluster(self) -> dict[int, int]:
        """Cluster id -> dialogues, largest first (ties by cluster id)."""
        counts = {c: len(d) for c, d in self.clusters.items() if d}
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class ClusterTask:
    """One task: the dialogues of one persona cluster, the last ``n_heldout`` held out.

    For a retraining task the held-out dialogues are its validation set; for a new task they
    are the query set and the rest is the support set. ``key`` and ``examples`` make it usable
    wherever a :class:`~metanb.data.tasks.PersonaTask` is.
    """

    cluster_id: int
    dialogues: list[Dialogue]
    n_heldout: int

    @property
    def key(self) -> str:
        return f"cluster-{self.cluster_id}"

    @property
    def train_dialogues(self) -> list[Dialogue]:
        """Dialogues to train on (retraining data, or a new task's support set)."""
        return self.dialogues[: len(self.dialogues) - self.n_heldout]

    @property
    def heldout_dialogues(self) -> list[Dialogue]:
        """The last ``n_heldout`` dialogues (retraining validation, or the query set)."""
        return self.dialogues[len(self.dialogues) - self.n_heldout :]

    @property
    def examples(self) -> list[Example]:
        return [ex for d in self.dialogues for ex in d.examples]

    @property
    def train(self) -> list[Example]:
        return [ex for d in self.train_dialogues for ex in d.examples]

    @property
    def heldout(self) -> list[Example]:
        return [ex for d in self.heldout_dialogues for ex in d.examples]


def cluster_dialogues(
    dialogues: Iterable[Dialogue], persona_map: Mapping[int, Sequence[Persona]]
) -> Clustering:
    """Assign every dialogue to its persona's cluster, in the paper's order (steps 1-2)."""
    by_persona: dict[Persona, list[Dialogue]] = {}
    for dialogue in dialogues:
        by_persona.setdefault(paml_persona(dialogue.persona), []).append(dialogue)
    index = persona_index(persona_map)
    result = Clustering()
    for persona, group in by_persona.items():
        cluster = index.get(persona)
        if cluster is None:
            result.unmapped.extend(group)
            result.unmapped_personas += 1
        else:
            result.clusters.setdefault(cluster, []).extend(group)
    return result


def cluster_tasks(
    dialogues: Iterable[Dialogue],
    persona_map: Mapping[int, Sequence[Persona]],
    n_heldout: int,
    min_dialogues: int = 2,
    drop_cluster: int | None = UNMAPPED_CLUSTER,
) -> list[ClusterTask]:
    """Every cluster with at least ``min_dialogues`` dialogues as a task, largest first."""
    import numpy as np

    if n_heldout < 0:
        raise MetanbError(f"n_heldout={n_heldout} must not be negative")
    clustering = cluster_dialogues(dialogues, persona_map)
    merged: dict[int, list[Dialogue]] = {}
    # the paper puts unmapped personas in cluster 0 where they first appear; as cluster 0 is
    # deleted below, only its own position among the clusters would differ, which is unseen
    for cluster, group in clustering.clusters.items():
        merged[cluster] = list(group)
    if clustering.unmapped:
        merged.setdefault(UNMAPPED_CLUSTER, []).extend(clustering.unmapped)
    tasks = [
        ClusterTask(cluster, group, n_heldout)
        for cluster, group in merged.items()
        if len(group) >= min_dialogues and cluster != drop_cluster
    ]
    sizes = np.array([len(t.train) for t in tasks], dtype=np.int64)
    return [tasks[i] for i in np.flip(np.argsort(sizes))]


def largest_tasks(tasks: Sequence[ClusterTask], n_tasks: int, what: str) -> list[ClusterTask]:
    """The first ``n_tasks`` tasks, each with something to train on and something held out."""
    if n_tasks < 1:
        raise MetanbError(f"the number of {what} tasks must be at least 1, got {n_tasks}")
    if n_tasks > len(tasks):
        raise MetanbError(
            f"asked for {n_tasks} {what} tasks but only {len(tasks)} persona clusters have "
            "at least 2 dialogues; ask for fewer tasks or use more data"
        )
    chosen = list(tasks[:n_tasks])
    for task in chosen:
        if not task.train or not task.heldout:
            raise MetanbError(
                f"{what} task {task.key} has {len(task.dialogues)} dialogues: holding out the "
                f"last {task.n_heldout} leaves {len(task.train)} examples to train on and "
                f"{len(task.heldout)} held out; hold out fewer dialogues or use more data"
            )
    return chosen


def retraining_tasks(
    dialogues: Iterable[Dialogue],
    persona_map: Mapping[int, Sequence[Persona]],
    n_tasks: int = PAPER_RETRAIN_TASKS,
    validation_dialogues: int = PAPER_VALIDATION_DIALOGUES,
) -> list[ClusterTask]:
    """The paper's retraining tasks: the largest train clusters, last dialogues for validation."""
    tasks = cluster_tasks(dialogues, persona_map, n_heldout=validation_dialogues)
    return largest_tasks(tasks, n_tasks, "retraining")


def new_tasks(
    dialogues: Iterable[Dialogue],
    persona_map: Mapping[int, Sequence[Persona]],
    n_tasks: int = PAPER_NEW_TASKS,
    query_dialogues: int = PAPER_QUERY_DIALOGUES,
) -> list[ClusterTask]:
    """The paper's new tasks: the largest valid clusters, the last dialogues as query set."""
    tasks = cluster_tasks(dialogues, persona_map, n_heldout=query_dialogues)
    return largest_tasks(tasks, n_tasks, "new")


def cluster_summary(
    dialogues: Sequence[Dialogue], persona_map: Mapping[int, Sequence[Persona]]
) -> dict[str, object]:
    """What ``data inspect --persona-map`` adds: clusters, their sizes, unmapped dialogues."""
    clustering = cluster_dialogues(dialogues, persona_map)
    per_cluster = clustering.dialogues_per_cluster()
    return {
        "clusters": len(per_cluster),
        "dialogues_per_cluster": {str(k): v for k, v in per_cluster.items()},
        "unmapped_dialogues": len(clustering.unmapped),
        "unmapped_personas": clustering.unmapped_personas,
        "clusters_with_2_dialogues": sum(1 for n in per_cluster.values() if n >= 2),
    }
