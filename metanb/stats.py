"""Intervals over seeds, computed once: every "±" and every interval the book prints comes
from here, so a table, a figure and a sentence can never disagree on what a bar means.

Conventions, for the whole package:

- spread is the *sample* standard deviation (ddof = 1): the seeds are a sample of the runs one
  could have made, not the whole population of them;
- a bar or a "±" is one standard error of the mean, s / √n, and says so ("mean ± s.e. over
  5 seeds");
- an interval is Student's t-interval of the mean at a stated level (95 % by default);
- a paired comparison (same seed, two methods) is the mean of the per-seed differences with
  its t-interval, the paired t-test, and two exact tests that assume no normality: the sign
  test and the Wilcoxon signed-rank test. They matter at n = 3-5, where the t-test leans on
  its assumption and 5 wins out of 5 is only p = 0.0625;
- one value has no spread: no standard error, no interval, and the label says so.

Student's t distribution for integer degrees of freedom has a finite closed form (Abramowitz
and Stegun 26.7.3-4), so the quantiles and p-values need no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from metanb.errors import MetanbError

LEVEL = 0.95   # the default coverage of every interval
TIE = 1e-12    # |difference| at or below this is a tie (accuracies are ratios of small ints)


# ---- Student's t distribution ----------------------------------------------------------------

def t_central(t: float, df: int) -> float:
    """P(|T| <= |t|) for Student's T with ``df`` degrees of freedom (A&S 26.7.3-4)."""
    _check_df(df)
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin θ (1 + c²/2 + 1·3/(2·4) c⁴ + ... up to c^(df-2))
        term = total = 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)  # (2/π)(θ + sin θ (c + 2/3 c³ + ... up to c^(df-2)))
    for k in range(1, (df - 1) // 2):
        term *= (2 * k) / (2 * k + 1) * c2
        total += term
    return 2 / math.pi * (theta + s * total)


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of a t statistic: P(|T| >= |t|)."""
    if math.isinf(t):
        return 0.0
    return max(0.0, 1.0 - t_central(t, df))


def t_quantile(q: float, df: int) -> float:
    """The t with P(T <= t) = q, for 0 < q < 1 (by bisection on the closed-form CDF)."""
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise MetanbError(f"a quantile needs 0 < q < 1, got {q}")
    if q == 0.5:
        return 0.0
    target = abs(2 * q - 1)
    lo, hi = 0.0, 1.0
    while t_central(hi, df) < target:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central(mid, df) < target else (lo, mid)
        if hi - lo <= 1e-14 * hi:
            break
    return math.copysign((lo + hi) / 2, q - 0.5)


def _check_df(df: int) -> None:
    if int(df) != df or df < 1:
        raise MetanbError(f"degrees of freedom must be a positive integer, got {df}")


# ---- one sample ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with its uncertainty, and what that uncertainty is.

    ``method`` is ``"se"`` (low/high = mean ∓ one standard error), ``"t"`` (low/high = the
    Student-t interval at ``level``) or ``"single"`` (one value: no se, no interval).
    """

    mean: float
    se: float | None
    low: float | None
    high: float | None
    n: int
    level: float | None
    method: str
    unit: str = "seeds"

    @property
    def std(self) -> float | None:
        """The sample standard deviation (ddof = 1) of the values."""
        return None if self.se is None else self.se * math.sqrt(self.n)

    def what(self) -> str:
        """What the numbers are, e.g. ``mean ± s.e. over 5 seeds``."""
        over = f"over {count(self.n, self.unit)}"
        if self.method == "single":
            return f"{count(1, self.unit)}: no interval"
        if self.method == "t":
            return f"mean and {percent(self.level)} t-interval {over}"
        return f"mean ± s.e. {over}"

    def cell(self, digits: int = 3, signed: bool = False) -> str:
        """The numbers alone, for a table whose header says what they are."""
        mean = _num(self.mean, digits, signed)
        if self.method == "single":
            return f"{mean} (n=1)"
        if self.method == "t":
            return f"{mean} [{_num(self.low, digits, signed)}, {_num(self.high, digits, signed)}]"
        return f"{mean} ± {self.se:.{digits}f}"

    def format(self, digits: int = 3, signed: bool = False) -> str:
        """Numbers and what they are: ``0.512 ± 0.021 (mean ± s.e. over 5 seeds)``."""
        return f"{self.cell(digits, signed)} ({self.what()})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_std(values: Sequence[float]) -> float | None:
    """The package's one standard deviation: ddof = 1; None for fewer than two values."""
    x = _values(values)
    return _std(x) if len(x) > 1 else None


def mean_se(values: Sequence[float], unit: str = "seeds") -> Estimate:
    """Mean ± one standard error (s / √n, s the sample std)."""
    x = _values(values)
    mean = float(x.mean())
    if len(x) == 1:
        return Estimate(mean, None, None, None, 1, None, "single", unit)
    se = _std(x) / math.sqrt(len(x))
    return Estimate(mean, se, mean - se, mean + se, len(x), None, "se", unit)


def t_interval(values: Sequence[float], level: float = LEVEL, unit: str = "seeds") -> Estimate:
    """Mean with Student's t-interval: mean ± t_{(1+level)/2, n-1} · s / √n."""
    if not 0.0 < level < 1.0:
        raise MetanbError(f"an interval's level must lie in (0, 1), got {level}")
    e = mean_se(values, unit)
    if e.se is None:
        return e
    half = t_quantile((1 + level) / 2, e.n - 1) * e.se
    return Estimate(e.mean, e.se, e.mean - half, e.mean + half, e.n, level, "t", unit)


def _std(x: np.ndarray) -> float:
    """Sample std (ddof = 1). Equal values have none: numpy's rounding of their mean would
    invent a spread of 1e-18, and a paired t of 1e16 with it."""
    return 0.0 if np.ptp(x) == 0 else float(x.std(ddof=1))


def _values(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise MetanbError("no values to summarise: give at least one number")
    if not np.isfinite(x).all():
        raise MetanbError(f"cannot summarise non-finite values: {x.tolist()}")
    return x


# ---- paired differences ----------------------------------------------------------------------

@dataclass(frozen=True)
class PairedComparison:
    """A method against a baseline, paired by seed: the differences' mean and t-interval, the
    paired t-test, the win/loss/tie counts and two exact tests.

    ``t`` and ``p_t`` are None for a single pair (no spread to test against).
    """

    difference: Estimate
    t: float | None
    p_t: float | None
    wins: int
    losses: int
    ties: int
    p_sign: float
    p_signed_rank: float

    @property
    def n(self) -> int:
        return self.difference.n

    def what(self) -> str:
        """What :meth:`cell` shows, for a table header."""
        return (f"mean difference [{percent(self.difference.level or LEVEL)} t-interval], "
                "paired t-test p, wins/pairs")

    def cell(self, digits: int = 3) -> str:
        """``+0.142 [+0.106, +0.178] p=0.0004 5/5``."""
        p = "" if self.p_t is None else f" p={format_p(self.p_t)}"
        return f"{self.difference.cell(digits, signed=True)}{p} {self.wins}/{self.n}"

    def format(self, digits: int = 3) -> str:
        """Everything in one line, saying what each number is."""
        d = self.difference
        if self.t is None:
            return f"{d.format(digits, signed=True)}; wins {self.wins}/{self.n}"
        t = "∞" if math.isinf(self.t) else f"{self.t:.2f}"
        return (f"{d.format(digits, signed=True)}; paired t({self.n - 1}) = {t}, "
                f"p = {format_p(self.p_t)}; wins {self.wins}/{self.n} (ties {self.ties}), "
                f"sign test p = {format_p(self.p_sign)}, signed-rank p = "
                f"{format_p(self.p_signed_rank)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(differences: Sequence[float], level: float = LEVEL, unit: str = "seeds"
           ) -> PairedComparison:
    """Summarise per-pair differences (method minus baseline, one per seed)."""
    x = _values(differences)
    d = t_interval(x, level, unit)
    wins, losses = int((x > TIE).sum()), int((x < -TIE).sum())
    if d.se is None:
        t = p_t = None
    elif d.se == 0.0:  # every difference equal: no noise, a sure sign (or nothing at all)
        t, p_t = (0.0, 1.0) if abs(d.mean) <= TIE else (math.copysign(math.inf, d.mean), 0.0)
    else:
        t = d.mean / d.se
        p_t = t_two_sided_p(t, d.n - 1)
    return PairedComparison(d, t, p_t, wins, losses, len(x) - wins - losses,
                            sign_test_p(wins, losses), signed_rank_p(x))


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test of ``wins`` against ``losses`` (ties left out):
    2 · P(Binomial(n, 1/2) <= min(wins, losses)), capped at 1."""
    if wins < 0 or losses < 0:
        raise MetanbError(f"wins and losses are counts, got {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def signed_rank_p(differences: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p-value.

    Zeros (|d| <= TIE) are dropped, tied |d| share their mean rank, and the null distribution
    of the positive rank sum is computed exactly over all 2^n sign flips of those very ranks
    (so ties are handled exactly, not by a normal approximation).
    """
    x = _values(differences)
    x = x[np.abs(x) > TIE]
    if len(x) == 0:
        return 1.0
    ranks2 = _doubled_midranks(np.abs(x))          # 2 × rank: integers even with ties
    observed = int(ranks2[x > 0].sum())
    dist = np.zeros(int(ranks2.sum()) + 1)
    dist[0] = 1.0
    for r in ranks2:                                # each rank enters with sign + or -
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:len(dist) - r]
        dist = 0.5 * (dist + shifted)
    low, high = dist[:observed + 1].sum(), dist[observed:].sum()
    return float(min(1.0, 2 * min(low, high)))


def _doubled_midranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks2 = np.empty(len(values), dtype=int)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and abs(values[order[j + 1]] - values[order[i]]) <= TIE:
            j += 1
        ranks2[order[i:j + 1]] = i + j + 2        # 2 × mean of ranks i+1 .. j+1
        i = j + 1
    return ranks2


# ---- words -----------------------------------------------------------------------------------

def count(n: int, unit: str = "seeds") -> str:
    """``5 seeds``, ``1 seed``: the unit is given in the plural."""
    return f"{n} {unit.removesuffix('s') if n == 1 and unit.endswith('s') else unit}"


def percent(level: float | None) -> str:
    """``95 %`` for 0.95."""
    return f"{100 * (level or LEVEL):g} %"


def format_p(p: float | None) -> str:
    """A p-value to two significant digits, ``<0.0001`` below that."""
    if p is None:
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def _num(value: float | None, digits: int, signed: bool) -> str:
    return "–" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


# ---- arrays and labels for figures -----------------------------------------------------------

def column_mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Column means of a (seeds × points) array and their standard errors (ddof = 1; None
    for a single row), the vectorised :func:`mean_se` behind every band in a figure."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0:
        raise MetanbError(f"expected a (seeds × points) array, got shape {x.shape}")
    if x.shape[0] == 1:
        return x[0], None
    se = np.where(np.ptp(x, axis=0) == 0, 0.0, x.std(0, ddof=1)) / math.sqrt(x.shape[0])
    return x.mean(0), se


def se_label(ns: Sequence[int], unit: str = "seeds") -> str:
    """What bars and ± are: ``mean ± s.e. over 5 seeds``, ``... over 3–5 seeds`` when the
    counts differ, ``1 seed: no s.e.`` when there is nothing to show."""
    ns = sorted(set(ns))
    if not ns:
        raise MetanbError("no counts: a figure with no points has no bars to describe")
    if ns[-1] <= 1:
        return f"{count(1, unit)}: no s.e."
    over = count(ns[0], unit) if len(ns) == 1 else f"{ns[0]}–{ns[-1]} {unit}"
    note = " (n = 1: no s.e.)" if ns[0] == 1 else ""
    return f"mean ± s.e. over {over}{note}"
