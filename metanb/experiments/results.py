"""Reading a run folder back: records -> summary rows (mean ± std over seeds) -> table.

Everything here is pure bookkeeping on the JSON records written by the runner, so chapter 6
and ``python -m metanb results DIR`` compute the same numbers from committed files without
touching a model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.runner import CONFIG_FILE, RESULTS_FILE, read_jsonl


@dataclass(frozen=True)
class SummaryRow:
    """Accuracy of one (method, retraining rank, fine-tuning) over seeds."""

    method: str
    retrain_rank: int | None
    finetune: str            # "0" (no fine-tuning), a LoRA rank "4", or "head"
    mean: float
    std: float | None        # sample standard deviation (n - 1); None for a single seed
    n: int                   # number of seeds
    seeds: tuple[int, ...]

    @property
    def method_label(self) -> str:
        if self.retrain_rank is None:
            return self.method
        return f"{self.method} (r={self.retrain_rank})"


@dataclass(frozen=True)
class Run:
    """A run folder: its config and its records."""

    path: Path
    config: ExperimentConfig
    records: list[dict[str, Any]]


def load_run(path: str | Path) -> Run:
    """Read ``config.yaml`` and ``results.jsonl`` of a run folder."""
    path = Path(path)
    if not (path / RESULTS_FILE).is_file():
        raise MetanbError(f"{path} holds no {RESULTS_FILE}; give the --out folder of a run")
    config = ExperimentConfig.load(path / CONFIG_FILE)
    return Run(path=path, config=config, records=read_jsonl(path / RESULTS_FILE))


def find_runs(path: str | Path) -> list[Run]:
    """A run folder itself, or (a sweep) every run folder directly inside it, sorted by name."""
    path = Path(path)
    if (path / RESULTS_FILE).is_file():
        return [load_run(path)]
    if not path.is_dir():
        raise MetanbError(f"{path} does not exist; give the --out folder of a run")
    runs = [load_run(p) for p in sorted(path.iterdir()) if (p / RESULTS_FILE).is_file()]
    if not runs:
        raise MetanbError(f"{path} holds no {RESULTS_FILE}, nor run folders that do")
    return runs


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def finetune_order(label: str) -> tuple[int, int]:
    """Sort key for fine-tuning labels: 0, 1, 4, 8, 16, ..., then head."""
    return (1, 0) if label == "head" else (0, int(label))


def summarize(records: Iterable[dict[str, Any]], methods: Sequence[str] | None = None
              ) -> list[SummaryRow]:
    """Mean ± std over seeds of each (method, retraining rank, fine-tuning) in ``records``.

    Rows come ordered by method (``methods`` order if given, else first appearance), then
    retraining rank, then fine-tuning (0, ranks ascending, head).
    """
    groups: dict[tuple[str, int | None, str], dict[int, float]] = defaultdict(dict)
    order: list[str] = list(methods or [])
    for r in records:
        groups[(r["method"], r["retrain_rank"], r["finetune"])][r["seed"]] = r["accuracy"]
        if r["method"] not in order:
            order.append(r["method"])
    rows = []
    for (method, rrank, label), by_seed in groups.items():
        seeds = tuple(sorted(by_seed))
        mean, std = mean_std([by_seed[s] for s in seeds])
        rows.append(SummaryRow(method, rrank, label, mean, std, len(seeds), seeds))
    rows.sort(key=lambda row: (order.index(row.method), -1 if row.retrain_rank is None
                               else row.retrain_rank, finetune_order(row.finetune)))
    return rows


def paired_differences(records: Iterable[dict[str, Any]], method: str = "lora-ml",
                       baseline: str = "standard") -> dict[str, dict[int, float]]:
    """Per fine-tuning label, per seed: ``method``'s accuracy minus ``baseline``'s.

    Differences are paired by seed (both methods see the same persona split and data), which
    removes the split-to-split variation from the comparison. When a method was retrained at
    several ranks, its smallest retraining rank is used. Labels or seeds that only one of the
    two methods has are left out.
    """
    records = list(records)
    a, b = _by_label_seed(records, method), _by_label_seed(records, baseline)
    out: dict[str, dict[int, float]] = {}
    for label in sorted({lab for lab, _ in a}, key=finetune_order):
        diffs = {seed: a[(lab, seed)] - b[(lab, seed)]
                 for lab, seed in sorted(a) if lab == label and (lab, seed) in b}
        if diffs:
            out[label] = diffs
    return out


def paired_gain(records: Iterable[dict[str, Any]], method: str = "lora-ml",
                baseline: str = "standard") -> dict[str, tuple[float, float | None, int]]:
    """Per fine-tuning label: mean ± std over seeds of ``method`` minus ``baseline`` accuracy
    (the seeds of :func:`paired_differences`), and the number of seeds."""
    out: dict[str, tuple[float, float | None, int]] = {}
    for label, diffs in paired_differences(records, method, baseline).items():
        mean, std = mean_std(list(diffs.values()))
        out[label] = (mean, std, len(diffs))
    return out


def persona_pairs(records: Iterable[dict[str, Any]], label: str, method: str = "lora-ml",
                  baseline: str = "standard") -> list[tuple[int, str, float, float]]:
    """``(seed, persona, method accuracy, baseline accuracy)`` for every held-out persona of
    every seed both methods ran at fine-tuning ``label``: the finest pairing the records allow
    (same persona, same support and query dialogues, same fine-tuning seed)."""
    records = list(records)
    a, b = _by_label_seed(records, method, full=True), _by_label_seed(records, baseline, full=True)
    pairs = []
    for (lab, seed), rec_a in sorted(a.items()):
        rec_b = b.get((lab, seed))
        if lab != label or rec_b is None:
            continue
        accs_a, accs_b = rec_a["accuracy_per_persona"], rec_b["accuracy_per_persona"]
        pairs += [(seed, persona, accs_a[persona], accs_b[persona])
                  for persona in accs_a if persona in accs_b]
    return pairs


def _by_label_seed(records: list[dict[str, Any]], method: str, full: bool = False
                   ) -> dict[tuple[str, int], Any]:
    """``{(label, seed): accuracy}`` (or the whole record) of ``method`` at its smallest
    retraining rank."""
    mine = [r for r in records if r["method"] == method]
    ranks = sorted({r["retrain_rank"] for r in mine}, key=lambda x: -1 if x is None else x)
    return {(r["finetune"], r["seed"]): (r if full else r["accuracy"]) for r in mine
            if ranks and r["retrain_rank"] == ranks[0]}


def run_provenance(run: Run) -> dict[str, Any]:
    """Where a run's numbers come from, gathered over its records: what ran (profile, model,
    data, sizes), on what (devices, library versions), from which commits, when, how long."""
    c, records = run.config, run.records
    prov = [r.get("provenance", {}) for r in records]

    def values(key: str) -> list[str]:
        return sorted({str(p[key]) for p in prov if p.get(key) is not None})

    data = {
        "generator": f"generated personas (data seed {c.data.seed})",
        "parlai": f"ParlAI file {c.data.path}",
        "hf": f"{c.data.hf_name} ({c.data.hf_split})",
    }[c.data.source]
    times = values("time_utc")
    retrain_s = sum(r.get("retrain_wall_s") or 0.0 for r in records if r["finetune"] == "0")
    return {
        "path": str(run.path),
        "profile": c.profile or "custom",
        "model": c.model.name,
        "data": data,
        "T": c.tasks.retrain, "heldout": c.tasks.heldout, "n": c.tasks.support,
        "m": c.tasks.candidates,
        "methods": sorted({r["method"] for r in records}, key=_method_order(c)),
        "seeds": sorted({r["seed"] for r in records}),
        "evaluations": len(records),
        "devices": values("device"),
        "commits": values("git_commit"),
        "versions": {lib: values(lib) for lib in ("metanb_version", "torch", "transformers",
                                                   "peft")},
        "first_utc": times[0] if times else None,
        "last_utc": times[-1] if times else None,
        "compute_hours": round((retrain_s + sum(r.get("wall_s", 0.0) for r in records))
                               / 3600, 2),
    }


def _method_order(config: ExperimentConfig) -> Any:
    listed = list(config.retrain.methods)
    return lambda m: (listed.index(m) if m in listed else len(listed), m)


def format_cell(mean: float, std: float | None, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` (``–`` for a single seed); ``signed`` writes the sign of differences."""
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± " + ("–" if std is None else f"{std:.{digits}f}")


def format_table(rows: Sequence[SummaryRow], digits: int = 3) -> str:
    """A plain-text table: one line per method, one column per fine-tuning (rank or head)."""
    labels = sorted({r.finetune for r in rows}, key=finetune_order)
    methods = list(dict.fromkeys(r.method_label for r in rows))
    cells = {(r.method_label, r.finetune): format_cell(r.mean, r.std, digits) for r in rows}
    seeds = {r.method_label: r.n for r in rows}
    header = ["method \\ fine-tuning rank"] + labels + ["seeds"]
    body = [[m] + [cells.get((m, lab), "") for lab in labels] + [str(seeds[m])]
            for m in methods]
    return text_table(header, body)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, a rule under the header."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_paired(records: Iterable[dict[str, Any]],
                  comparisons: Sequence[tuple[str, str]] = (("lora-ml", "standard"),),
                  digits: int = 3) -> str:
    """A table of paired differences: one row per fine-tuning label, one column per
    ``(method, baseline)``; each cell is ``mean ± std (wins/seeds)``, where *wins* counts the
    seeds in which ``method`` was strictly ahead. Comparisons with no common seed are left out.
    """
    records = list(records)
    columns = [(f"{m} − {b}", paired_differences(records, m, b)) for m, b in comparisons]
    columns = [(name, diffs) for name, diffs in columns if diffs]
    if not columns:
        raise MetanbError("no paired comparison possible: the records share no (fine-tuning, "
                          f"seed) between the methods of {list(comparisons)}")
    labels = sorted({lab for _, diffs in columns for lab in diffs}, key=finetune_order)

    def cell(by_seed: dict[int, float] | None) -> str:
        if not by_seed:
            return ""
        wins = sum(d > 0 for d in by_seed.values())
        return (format_cell(*mean_std(list(by_seed.values())), digits=digits, signed=True)
                + f" ({wins}/{len(by_seed)})")

    body = [[lab] + [cell(diffs.get(lab)) for _, diffs in columns] for lab in labels]
    return text_table(["fine-tuning"] + [name for name, _ in columns], body)


def default_comparisons(records: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """The ``(method, baseline)`` pairs worth tabulating for the methods present: LoRA-ML
    against SR and against Reptile, then Reptile against SR."""
    methods = {r["method"] for r in records}
    wanted = [("lora-ml", "standard"), ("lora-ml", "reptile"), ("reptile", "standard")]
    return [(m, b) for m, b in wanted if m in methods and b in methods]


def gains_by_tasks(runs: Sequence[Run], method: str = "lora-ml", baseline: str = "standard"
                   ) -> dict[int, dict[str, tuple[float, float | None, int]]]:
    """For the runs of a sweep over T: ``{T: paired_gain(...)}``, sorted by T."""
    Ts = [run.config.tasks.retrain for run in runs]
    if len(set(Ts)) != len(Ts):
        raise MetanbError("the run folders of a sweep must differ in tasks.retrain (T); found "
                          + ", ".join(str(T) for T in Ts))
    return {run.config.tasks.retrain: paired_gain(run.records, method, baseline)
            for run in sorted(runs, key=lambda r: r.config.tasks.retrain)}


def format_sweep(gains: dict[int, dict[str, tuple[float, float | None, int]]],
                 digits: int = 3) -> str:
    """The paired gains of :func:`gains_by_tasks` as a table: one row per T, one column per
    fine-tuning label, each cell ``mean ± std``."""
    labels = sorted({lab for g in gains.values() for lab in g}, key=finetune_order)
    body = [[str(T)] + [format_cell(*g[lab][:2], digits=digits, signed=True) if lab in g
                        else "" for lab in labels]
            for T, g in sorted(gains.items())]
    return text_table(["T \\ fine-tuning"] + labels, body)


def short_commit(commit: str, length: int = 12) -> str:
    """A commit hash cut to ``length`` characters, keeping its ``-dirty`` mark if it has one
    (a shortened hash must not hide that the code differed from the commit)."""
    dirty = "-dirty" if commit.endswith("-dirty") else ""
    return commit.removesuffix("-dirty")[:length] + dirty


def format_provenance(runs: Sequence[Run]) -> str:
    """A table of where each run's numbers come from (see :func:`run_provenance`)."""
    body = []
    for run in runs:
        p = run_provenance(run)
        body.append([
            Path(p["path"]).name, p["profile"], p["model"], str(p["T"]),
            ",".join(str(s) for s in p["seeds"]), ",".join(p["methods"]),
            "; ".join(p["devices"]), ",".join(short_commit(c, 8) for c in p["commits"]),
            (p["last_utc"] or "?")[:10], f"{p['compute_hours']:.2f}",
        ])
    header = ["run", "profile", "model", "T", "seeds", "methods", "device", "commit",
              "finished", "hours"]
    return text_table(header, body)


def rows_as_dicts(rows: Sequence[SummaryRow]) -> list[dict[str, Any]]:
    return [{**asdict(r), "seeds": list(r.seeds)} for r in rows]


def describe_run(run: Run | Sequence[Run]) -> str:
    """One line naming profile, model, data, sizes, device and commit, for figure captions.

    Given the runs of a sweep over T, the line lists every T and every device and commit.
    """
    runs = [run] if isinstance(run, Run) else list(run)
    if not runs:
        raise MetanbError("no runs to describe")
    provs = [run_provenance(r) for r in runs]
    p = provs[0]
    Ts = sorted({q["T"] for q in provs})
    devices = sorted({d for q in provs for d in q["devices"]})
    commits = sorted({short_commit(c) for q in provs for c in q["commits"]})
    tasks = f"T={Ts[0]}" if len(Ts) == 1 else "T=" + ",".join(str(T) for T in Ts)
    return (f"profile {p['profile']} · model {p['model']} · {p['data']} · "
            f"{tasks}, n={p['n']}, m={p['m']} · device {', '.join(devices) or '?'} · "
            f"commit {', '.join(commits) or '?'}")
