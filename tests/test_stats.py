"""metanb.stats against closed forms: t quantiles from the tables, a hand-computed paired
example, exact sign and signed-rank p-values, and the one-value case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metanb.errors import MetanbError
from metanb.stats import (
    column_mean_se,
    count,
    format_p,
    mean_se,
    paired,
    sample_std,
    se_label,
    sign_test_p,
    signed_rank_p,
    t_central,
    t_interval,
    t_quantile,
    t_two_sided_p,
)

# two-sided 95 % critical values t_{0.975, df}, from any t table
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 9: 2.262157,
        10: 2.228139, 29: 2.045230, 100: 1.983972}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_table(df: int) -> None:
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=5e-7)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], abs=5e-7)
    assert t_two_sided_p(T975[df], df) == pytest.approx(0.05, abs=1e-7)


def test_t_distribution_closed_forms() -> None:
    # df = 1 is Cauchy: P(|T| <= 1) = 1/2; df = 2: P(|T| <= t) = t / sqrt(t² + 2)
    assert t_central(1.0, 1) == pytest.approx(0.5, abs=1e-15)
    assert t_central(3.0, 2) == pytest.approx(3 / math.sqrt(11), abs=1e-15)
    assert t_quantile(0.5, 7) == 0.0 and t_quantile(0.995, 1) == pytest.approx(63.656741, 1e-7)
    assert t_two_sided_p(0.0, 4) == pytest.approx(1.0) and t_two_sided_p(math.inf, 4) == 0.0
    for bad in (0, -1, 2.5):
        with pytest.raises(MetanbError, match="degrees of freedom must be a positive integer"):
            t_quantile(0.9, bad)
    with pytest.raises(MetanbError, match="0 < q < 1"):
        t_quantile(1.0, 3)


def test_t_distribution_agrees_with_scipy_where_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 6, 17, 250):
        for q in (0.55, 0.9, 0.995, 0.9999):
            assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-10)
        for t in (0.3, 2.0, 10.9):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-13)


def test_mean_se_and_t_interval_by_hand() -> None:
    x = [0.5, 0.6, 0.7]  # mean 0.6, sample std 0.1, se 0.1/√3
    assert sample_std(x) == pytest.approx(0.1)
    e = mean_se(x)
    assert (e.mean, e.n, e.method, e.level) == (pytest.approx(0.6), 3, "se", None)
    assert e.se == pytest.approx(0.1 / math.sqrt(3)) and e.std == pytest.approx(0.1)
    assert (e.low, e.high) == (pytest.approx(0.6 - e.se), pytest.approx(0.6 + e.se))
    assert e.format() == "0.600 ± 0.058 (mean ± s.e. over 3 seeds)"
    t = t_interval(x)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (t.low, t.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert t.format() == "0.600 [0.352, 0.848] (mean and 95 % t-interval over 3 seeds)"
    assert t_interval(x, level=0.5).high == pytest.approx(0.6 + 0.816497 * 0.1 / math.sqrt(3))


def test_one_value_has_no_interval_and_says_so() -> None:
    for e in (mean_se([0.42]), t_interval([0.42])):
        assert (e.mean, e.se, e.low, e.high, e.n, e.method) == (0.42, None, None, None, 1,
                                                                 "single")
        assert e.std is None
        assert e.format() == "0.420 (n=1) (1 seed: no interval)"
    assert sample_std([0.42]) is None
    one = paired([0.064])
    assert (one.t, one.p_t, one.wins) == (None, None, 1)
    assert one.format() == "+0.064 (n=1) (1 seed: no interval); wins 1/1"


def test_bad_input_is_refused_in_one_line() -> None:
    with pytest.raises(MetanbError, match="no values to summarise"):
        mean_se([])
    with pytest.raises(MetanbError, match="non-finite"):
        mean_se([0.1, float("nan")])
    with pytest.raises(MetanbError, match=r"level must lie in \(0, 1\)"):
        t_interval([0.1, 0.2], level=95)
    with pytest.raises(MetanbError, match="wins and losses are counts"):
        sign_test_p(-1, 2)


def test_paired_example_by_hand() -> None:
    # the review's T = 16 rank-1 gains: mean 0.1416, sample std 0.029228..., t ≈ 10.83
    d = [0.146, 0.115, 0.177, 0.161, 0.109]
    c = paired(d)
    s = math.sqrt(sum((x - 0.1416) ** 2 for x in d) / 4)
    assert c.difference.mean == pytest.approx(0.1416)
    assert c.difference.se == pytest.approx(s / math.sqrt(5))
    assert c.t == pytest.approx(0.1416 / (s / math.sqrt(5)))
    assert c.difference.low == pytest.approx(0.1416 - 2.776445 * s / math.sqrt(5), abs=1e-8)
    assert (c.wins, c.losses, c.ties) == (5, 0, 0)
    assert c.p_sign == 0.0625 and c.p_signed_rank == 0.0625  # 2 / 2^5: the smallest possible
    assert 3e-4 < c.p_t < 5e-4
    assert c.format() == ("+0.142 [+0.105, +0.178] (mean and 95 % t-interval over 5 seeds); "
                          "paired t(4) = 10.83, p = 0.00041; wins 5/5 (ties 0), "
                          "sign test p = 0.062, signed-rank p = 0.062")
    assert c.cell() == "+0.142 [+0.105, +0.178] p=0.00041 5/5"


def test_paired_with_ties_and_constant_differences() -> None:
    c = paired([0.1, 0.0, -0.05, 0.1])
    assert (c.wins, c.losses, c.ties) == (2, 1, 1)
    assert c.p_sign == 1.0  # 2 of 3 non-ties: 2 · P(B(3, ½) <= 1) = 1
    same = paired([0.05, 0.05, 0.05])
    assert same.t == math.inf and same.p_t == 0.0
    nothing = paired([0.0, 0.0])
    assert (nothing.t, nothing.p_t, nothing.p_sign, nothing.p_signed_rank) == (0.0, 1.0, 1.0,
                                                                              1.0)


def test_sign_test_is_the_exact_binomial() -> None:
    assert sign_test_p(5, 0) == 0.0625 and sign_test_p(0, 5) == 0.0625
    assert sign_test_p(7, 2) == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0


def test_signed_rank_exact_small_cases() -> None:
    # n = 3, ranks 1..3, all positive: W+ = 6 is 1 of 8 sign patterns, two-sided 2/8
    assert signed_rank_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    # W+ = 2 (rank 2 positive, ranks 1 and 3 negative): P(W+ <= 2) = 2/8 ({}, {2}... {1},{2})
    assert signed_rank_p([-0.1, 0.2, -0.3]) == pytest.approx(2 * 3 / 8)
    # tied |d|: mid-ranks 1.5, 1.5, 3; all positive → 1 of 8 patterns reaches W+ = 6
    assert signed_rank_p([0.1, 0.1, 0.3]) == pytest.approx(0.25)
    assert signed_rank_p([0.0, 0.0]) == 1.0
    assert signed_rank_p([0.0, 0.1, 0.2]) == pytest.approx(0.5)  # the zero is dropped


def test_signed_rank_agrees_with_scipy_where_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (4, 7, 12):
        x = rng.normal(0.05, 0.1, n)
        assert signed_rank_p(x) == pytest.approx(stats.wilcoxon(x, method="exact").pvalue,
                                                 abs=1e-12)


def test_column_bands_use_the_sample_std() -> None:
    values = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    mean, se = column_mean_se(values)
    assert mean.tolist() == [3.0, 2.0]
    assert se.tolist() == pytest.approx([2.0 / math.sqrt(3), 0.0])  # ddof = 1, not 0
    single_mean, single_se = column_mean_se(values[:1])
    assert single_mean.tolist() == [1.0, 2.0] and single_se is None
    with pytest.raises(MetanbError, match=r"\(seeds × points\) array"):
        column_mean_se(np.ones(3))


def test_labels_say_what_and_how_many() -> None:
    assert se_label([5, 5]) == "mean ± s.e. over 5 seeds"
    assert se_label([3, 5, 3]) == "mean ± s.e. over 3–5 seeds"
    assert se_label([1, 5]) == "mean ± s.e. over 1–5 seeds (n = 1: no s.e.)"
    assert se_label([1]) == "1 seed: no s.e."
    assert count(1, "(seed, persona) pairs") == "1 (seed, persona) pair"
    assert (format_p(0.0625), format_p(3e-6), format_p(None)) == ("0.062", "<0.0001", "–")
    with pytest.raises(MetanbError, match="no counts"):
        se_label([])
