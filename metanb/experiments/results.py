"""Reading a run folder back: records -> summary rows (mean ± s.e. over seeds) -> tables.

Everything here is pure bookkeeping on the JSON records written by the runner, so chapter 6
and ``python -m metanb results DIR`` compute the same numbers from committed files without
touching a model. Every interval comes from :mod:`metanb.stats`, and every table says in its
first line what its cells are and over how many seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError
from metanb.experiments.config import ExperimentConfig
from metanb.experiments.grid import load_experiment_config
from metanb.experiments.runner import CONFIG_FILE, RESULTS_FILE, read_jsonl
from metanb.stats import (
    LEVEL,
    Estimate,
    PairedComparison,
    count,
    format_p,
    mean_se,
    paired,
    percent,
    se_label,
)

# The record fields that identify the retrained base a record was evaluated on: every record
# of one cell must agree on them (see check_one_base_per_cell). The first two are saved with
# the base itself, so a resumed cell that reloads its base copies them exactly.
BASE_KEYS = ("retrain_final_loss", "retrain_wall_s", "retrain_commit", "base_sha256")


@dataclass(frozen=True)
class SummaryRow:
    """Accuracy of one (method, retraining rank, fine-tuning) over seeds."""

    method: str
    retrain_rank: int | None
    finetune: str                # "0" (no fine-tuning), a LoRA rank "4", or "head"
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]  # one per seed, in the order of ``seeds``

    @property
    def estimate(self) -> Estimate:
        """Mean ± standard error over the seeds (see :func:`metanb.stats.mean_se`)."""
        return mean_se(self.accuracies)

    @property
    def mean(self) -> float:
        return self.estimate.mean

    @property
    def se(self) -> float | None:
        """Standard error of the mean; None for a single seed."""
        return self.estimate.se

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof = 1); None for a single seed."""
        return self.estimate.std

    @property
    def n(self) -> int:
        return len(self.seeds)

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
    config = load_experiment_config(path / CONFIG_FILE)
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


def finetune_order(label: str) -> tuple[int, int]:
    """Sort key for fine-tuning labels: 0, 1, 4, 8, 16, ..., then head."""
    return (1, 0) if label == "head" else (0, int(label))


def summarize(records: Iterable[dict[str, Any]], methods: Sequence[str] | None = None
              ) -> list[SummaryRow]:
    """Accuracy over seeds of each (method, retraining rank, fine-tuning) in ``records``.

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
        rows.append(SummaryRow(method, rrank, label, seeds, tuple(by_seed[s] for s in seeds)))
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
                baseline: str = "standard", level: float = LEVEL
                ) -> dict[str, PairedComparison]:
    """Per fine-tuning label: ``method`` minus ``baseline`` accuracy, paired by seed (the
    seeds of :func:`paired_differences`), with its t-interval, paired t-test, wins and exact
    sign and signed-rank tests (:func:`metanb.stats.paired`)."""
    return {label: paired(list(diffs.values()), level)
            for label, diffs in paired_differences(records, method, baseline).items()}


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

    times = values("time_utc")
    retrain_s = sum(r.get("retrain_wall_s") or 0.0 for r in records if r["finetune"] == "0")
    return {
        "path": str(run.path),
        "profile": c.profile or "custom",
        **experiment_setup(c, records),
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


def experiment_setup(config: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """model, data, T, heldout, n, m of a run: the config's own ``setup_summary`` if it has
    one (an experiment other than convai2), else convai2's."""
    own = getattr(config, "setup_summary", None)
    if own is not None:
        return own(records)
    c = config
    data = {
        "generator": f"generated personas (data seed {c.data.seed})",
        "parlai": f"ParlAI file {c.data.path}",
        "hf": f"{c.data.hf_name} ({c.data.hf_split})",
    }[c.data.source]
    return {"model": c.model.name, "data": data, "T": c.tasks.retrain,
            "heldout": c.tasks.heldout, "n": c.tasks.support, "m": c.tasks.candidates}


def _method_order(config: ExperimentConfig) -> Any:
    listed = list(config.retrain.methods)
    return lambda m: (listed.index(m) if m in listed else len(listed), m)


def format_table(rows: Sequence[SummaryRow], digits: int = 3) -> str:
    """A plain-text table: one line per method, one column per fine-tuning (rank or head),
    each cell mean ± s.e. over seeds, under a first line that says so."""
    if not rows:
        raise MetanbError("no summary rows to tabulate: the run has no records yet")
    labels = sorted({r.finetune for r in rows}, key=finetune_order)
    methods = list(dict.fromkeys(r.method_label for r in rows))
    cells = {(r.method_label, r.finetune): r.estimate.cell(digits) for r in rows}
    seeds: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        seeds[r.method_label].add(r.n)
    header = ["method \\ fine-tuning rank"] + labels + ["seeds"]
    body = [[m] + [cells.get((m, lab), "") for lab in labels]
            + [_n_range(seeds[m])]
            for m in methods]
    caption = f"held-out accuracy, {se_label([r.n for r in rows])}"
    return caption + "\n" + text_table(header, body)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, a rule under the header."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_paired(records: Iterable[dict[str, Any]],
                  comparisons: Sequence[tuple[str, str]] = (("lora-ml", "standard"),),
                  digits: int = 3, level: float = LEVEL) -> str:
    """A table of paired differences, one row per (comparison, fine-tuning label): the mean
    difference over seeds, its t-interval, the paired t-test's p, the exact sign test's p and
    the wins (seeds in which the first method was strictly ahead). Comparisons with no common
    seed are left out. The first line says what the columns are.
    """
    records = list(records)
    tables = [(f"{m} − {b}", paired_gain(records, m, b, level)) for m, b in comparisons]
    tables = [(name, gains) for name, gains in tables if gains]
    if not tables:
        raise MetanbError("no paired comparison possible: the records share no (fine-tuning, "
                          f"seed) between the methods of {list(comparisons)}")
    body = []
    for name, gains in tables:
        for lab in sorted(gains, key=finetune_order):
            c = gains[lab]
            d = c.difference
            interval = ("–" if d.low is None else
                        f"[{d.low:+.{digits}f}, {d.high:+.{digits}f}]")
            body.append([name, lab, f"{d.mean:+.{digits}f}", interval, format_p(c.p_t),
                         format_p(c.p_sign), f"{c.wins}/{c.n}"])
    ns = [c.n for _, gains in tables for c in gains.values()]
    caption = (f"accuracy differences paired by seed ({_seed_range(ns)}): mean, "
               f"{percent(level)} t-interval, two-sided p of the paired t-test and of the "
               "exact sign test, wins")
    header = ["comparison", "fine-tuning", "mean", f"{percent(level)} interval", "p (t)",
              "p (sign)", "wins"]
    return caption + "\n" + text_table(header, body)


def _n_range(ns: Iterable[int]) -> str:
    """``5``, or ``3–5`` when the counts differ."""
    ns = sorted(set(ns))
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _seed_range(ns: Sequence[int]) -> str:
    return count(ns[0]) if len(set(ns)) == 1 else f"{_n_range(ns)} seeds"


def default_comparisons(records: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """The ``(method, baseline)`` pairs worth tabulating for the methods present: LoRA-ML
    against SR and against Reptile, then Reptile against SR."""
    methods = {r["method"] for r in records}
    wanted = [("lora-ml", "standard"), ("lora-ml", "reptile"), ("reptile", "standard")]
    return [(m, b) for m, b in wanted if m in methods and b in methods]


def gains_by_tasks(runs: Sequence[Run], method: str = "lora-ml", baseline: str = "standard"
                   ) -> dict[int, dict[str, PairedComparison]]:
    """For the runs of a sweep over T: ``{T: paired_gain(...)}``, sorted by T."""
    Ts = [experiment_setup(run.config, run.records)["T"] for run in runs]
    if len(set(Ts)) != len(Ts):
        raise MetanbError("the run folders of a sweep must differ in tasks.retrain (T); found "
                          + ", ".join(str(T) for T in Ts))
    return {T: paired_gain(run.records, method, baseline)
            for T, run in sorted(zip(Ts, runs, strict=True), key=lambda pair: pair[0])}


def gains_by_support(runs: Sequence[Run], method: str = "lora-ml", baseline: str = "standard"
                     ) -> dict[int, dict[str, PairedComparison]]:
    """For the runs of a sweep over the support size n: ``{n: paired_gain(...)}``, by n."""
    ns = [run.config.tasks.support for run in runs]
    if len(set(ns)) != len(ns):
        raise MetanbError("the run folders of a support sweep must differ in tasks.support (n);"
                          " found " + ", ".join(str(n) for n in ns))
    return {run.config.tasks.support: paired_gain(run.records, method, baseline)
            for run in sorted(runs, key=lambda r: r.config.tasks.support)}


def finetune_name(label: str) -> str:
    """How tables and figures name a fine-tuning label: "no fine-tuning" for 0, "last-layer
    fine-tuning" for head, "rank-r LoRA fine-tuning" for a rank."""
    if label == "0":
        return "no fine-tuning"
    return "last-layer fine-tuning" if label == "head" else f"rank-{label} LoRA fine-tuning"


def accuracy_by_seed(records: Iterable[dict[str, Any]], method: str, label: str
                     ) -> dict[int, float]:
    """``{seed: accuracy}`` of ``method`` after fine-tuning ``label`` (its smallest
    retraining rank when it ran several)."""
    return {seed: acc for (lab, seed), acc in _by_label_seed(list(records), method).items()
            if lab == label}


def growth(by_value: Mapping[int, Run], method: str, label: str, a: int, b: int
           ) -> dict[int, float]:
    """Per seed: ``method``'s accuracy at sweep value ``b`` minus at ``a`` (e.g. T or n).

    Only meaningful when a seed sees the same held-out personas at every value (a support
    sweep, or a T sweep with ``tasks.nested``); :func:`growth_table` checks that."""
    at_a = accuracy_by_seed(by_value[a].records, method, label)
    at_b = accuracy_by_seed(by_value[b].records, method, label)
    return {seed: at_b[seed] - at_a[seed] for seed in sorted(at_a) if seed in at_b}


def same_heldout_personas(runs: Iterable[Run]) -> bool:
    """Whether every run evaluates each seed on the same held-out personas (read off the
    records' per-persona accuracies), so a difference across runs is paired by seed."""
    seen: dict[int, set[frozenset[str]]] = defaultdict(set)
    for run in runs:
        for r in run.records:
            seen[r["seed"]].add(frozenset(r.get("accuracy_per_persona", {})))
    return all(len(v) == 1 for v in seen.values())


def growth_table(by_value: Mapping[int, Run], label: str, axis: str,
                 methods: tuple[str, str] = ("standard", "lora-ml")) -> str:
    """What each step of a sweep bought each method at fine-tuning ``label``: per seed the
    accuracy at ``b`` minus at ``a``, for consecutive values and first → last, mean [t-interval]
    over seeds, and the second method's growth minus the first's (with its wins)."""
    if not same_heldout_personas(by_value.values()):
        raise MetanbError(f"the runs of this {axis} sweep do not share each seed's held-out "
                          "personas, so differences across them are not paired by seed (a T "
                          "sweep needs tasks.nested=true)")
    base, other = methods
    values = sorted(by_value)
    steps = [*zip(values, values[1:], strict=False), (values[0], values[-1])]
    body = []
    for a, b in steps:
        g_base, g_other = growth(by_value, base, label, a, b), growth(by_value, other, label, a, b)
        both = [g_other[s] - g_base[s] for s in g_base if s in g_other]
        c = paired(both)
        body.append([f"{a} → {b}", paired(list(g_base.values())).difference.cell(signed=True),
                     paired(list(g_other.values())).difference.cell(signed=True),
                     f"{c.difference.cell(signed=True)} {c.wins}/{c.n}"])
    level = percent(LEVEL)
    return (f"accuracy after {finetune_name(label)} gained from {axis} = a to {axis} = b, "
            f"paired by seed: mean [{level} t-interval]; last column with wins\n"
            + text_table(["a → b", method_short(base), method_short(other),
                          f"{method_short(other)}'s gain − {method_short(base)}'s"], body))


def method_short(method: str) -> str:
    """The short name tables use: the registry's display name without its gloss ("SR")."""
    from metanb.retrain.methods import METHODS

    return METHODS[method].display.split(" (")[0] if method in METHODS else method


def format_sweep(gains: dict[int, dict[str, PairedComparison]], digits: int = 3,
                 axis: str = "T") -> str:
    """The paired gains of :func:`gains_by_tasks` as a table: one row per T, one column per
    fine-tuning label, each cell mean ± s.e. of the paired difference, starred when its
    t-interval excludes 0; a last column gives the seeds of each T."""
    labels = sorted({lab for g in gains.values() for lab in g}, key=finetune_order)

    def cell(c: PairedComparison) -> str:
        d = c.difference
        if d.se is None:
            return d.cell(digits, signed=True)
        star = "*" if d.low > 0 or d.high < 0 else ""
        return f"{d.mean:+.{digits}f} ± {d.se:.{digits}f}{star}"

    body = [[str(T)] + [cell(g[lab]) if lab in g else "" for lab in labels]
            + [_n_range([c.n for c in g.values()])]
            for T, g in sorted(gains.items())]
    comparisons = [c for g in gains.values() for c in g.values()]
    level = percent(comparisons[0].difference.level) if comparisons else percent(LEVEL)
    caption = (f"accuracy gain paired by seed, {se_label([c.n for c in comparisons])}; "
               f"* = the {level} t-interval excludes 0")
    return caption + "\n" + text_table([f"{axis} \\ fine-tuning"] + labels + ["seeds"], body)


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
    """Summary rows as plain JSON data, with their mean, sample std and standard error."""
    return [{**asdict(r), "seeds": list(r.seeds), "accuracies": list(r.accuracies),
             "mean": r.mean, "std": r.std, "se": r.se, "n": r.n} for r in rows]


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


# ---- one base per cell -----------------------------------------------------------------------

def check_one_base_per_cell(records: Iterable[dict[str, Any]]) -> list[str]:
    """One warning line per cell (method, seed, retraining rank) whose records were evaluated
    on different retrained bases, i.e. disagree on :data:`BASE_KEYS`.

    A cell retrains one base and evaluates it under every fine-tuning; a resumed cell reloads
    that base with its final loss and wall time. Records of one cell that disagree on them
    were fine-tuned from bases trained twice, and their differences across fine-tuning mix
    two retrainings: the cell must be re-run.
    """
    cells: dict[tuple[str, int, int | None], dict[tuple[Any, ...], list[dict[str, Any]]]] = (
        defaultdict(lambda: defaultdict(list)))
    for r in records:
        base = tuple(r.get(key) for key in BASE_KEYS)
        cells[(r["method"], r["seed"], r["retrain_rank"])][base].append(r)
    warnings = []
    for (method, seed, rrank), bases in cells.items():
        if len(bases) < 2:
            continue
        rank = "" if rrank is None else f" r={rrank}"
        parts = [_describe_base(group) for group in
                 sorted(bases.values(), key=lambda g: min(finetune_order(r["finetune"])
                                                          for r in g))]
        warnings.append(f"warning: cell {method}{rank} seed {seed} mixes {len(bases)} retrained "
                        "bases (re-run it): " + "; ".join(parts))
    return warnings


def _describe_base(group: list[dict[str, Any]]) -> str:
    labels = ",".join(sorted({r["finetune"] for r in group}, key=finetune_order))
    loss, wall = group[0].get("retrain_final_loss"), group[0].get("retrain_wall_s")
    prov = [r.get("provenance", {}) for r in group]
    commits = sorted({short_commit(str(p["git_commit"]), 8) for p in prov
                      if p.get("git_commit")})
    days = sorted({str(p["time_utc"])[:10] for p in prov if p.get("time_utc")})
    what = [f"loss {loss:.6g}" if isinstance(loss, float) else f"loss {loss}",
            f"{wall:g} s" if isinstance(wall, (int, float)) else f"time {wall}",
            "commit " + (",".join(commits) or "?"), ",".join(days) or "?"]
    if group[0].get("base_sha256"):  # records since the digest exists carry it
        what.insert(0, f"sha256 {str(group[0]['base_sha256'])[:12]}")
    return f"fine-tuning {labels} from a base with " + ", ".join(what)


# ---- the whole report (python -m metanb results DIR) -----------------------------------------

def format_report(runs: Sequence[Run]) -> str:
    """What ``python -m metanb results DIR`` prints: per run its description, a warning line
    for each cell mixing retrained bases, the accuracy table and the paired differences; for
    a sweep over T, the paired gain by T."""
    parts = []
    for run in runs:
        lines = [f"{run.path}: {describe_run(run)}", *check_one_base_per_cell(run.records),
                 format_table(summarize(run.records, run.config.retrain.methods))]
        comparisons = default_comparisons(run.records)
        if comparisons:
            lines += ["", format_paired(run.records, comparisons)]
        parts.append("\n".join(lines))
    if len(runs) > 1 and len({run.config.tasks.retrain for run in runs}) == 1:
        parts.append("LoRA-ML − SR by support size n\n"
                     + format_sweep(gains_by_support(runs), axis="n"))
    elif len(runs) > 1:
        parts.append("LoRA-ML − SR by T\n" + format_sweep(gains_by_tasks(runs)))
    return "\n\n".join(parts)


def report_json(runs: Sequence[Run]) -> dict[str, Any]:
    """The same report as plain JSON data (``python -m metanb results DIR --json``)."""
    payload: dict[str, Any] = {"runs": [
        {"path": str(run.path), "description": describe_run(run),
         "tasks": experiment_setup(run.config, run.records)["T"],
         "warnings": check_one_base_per_cell(run.records),
         "rows": rows_as_dicts(summarize(run.records, run.config.retrain.methods)),
         "paired": {f"{m} - {b}": {lab: c.as_dict() for lab, c in
                                   paired_gain(run.records, m, b).items()}
                    for m, b in default_comparisons(run.records)}}
        for run in runs]}
    if len(runs) > 1 and len({run.config.tasks.retrain for run in runs}) == 1:
        payload["gain_vs_n"] = {n: {lab: c.as_dict() for lab, c in gains.items()}
                                for n, gains in gains_by_support(runs).items()}
    elif len(runs) > 1:
        payload["gain_vs_T"] = {T: {lab: c.as_dict() for lab, c in gains.items()}
                                for T, gains in gains_by_tasks(runs).items()}
    return payload
