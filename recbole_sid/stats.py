"""Statistics the leaderboard uses to summarise a metric over seeds and to compare a model with a reference model.

A *cell* is one (split seed, model seed) run; a model and its reference are compared on the cells both have.

* ``summarize``: the mean of the values, their sample standard deviation (ddof=1) and the two-sided Student-t
  confidence interval mean ± t_{n-1} * std / sqrt(n). None and NaN values are dropped first. With one value the
  std and the interval are None (one value has no spread), never 0.
* ``paired_cells`` ("paired t over cells"): a two-sided paired t-test over cells on the differences
  model - reference (the same test as ``scipy.stats.ttest_rel``); only cells where both models have a value are
  paired. The interval is the t-interval of the mean difference. With fewer than 2 pairs the p-value is None; when
  every difference is the same the t statistic is infinite, so p = 0.0 if that difference is nonzero and 1.0 if it
  is 0.
* ``paired_bootstrap_users`` ("paired bootstrap over users (stratified by cell)"): the statistic is the mean over
  cells of the mean per-user difference model - reference in that cell, so every cell weighs the same whatever its
  number of users; only users scored by both models in a cell are paired. Each of ``n_boot`` replicates resamples
  the users of every cell with replacement, independently per cell, with ``numpy.random.default_rng(seed)``. The
  interval is the percentile interval of the replicates (2.5th and 97.5th percentiles for 95%); the two-sided
  p-value is min(1, 2 * min(share of replicates <= 0, share of replicates >= 0)).
* ``wilcoxon_users`` ("Wilcoxon signed-rank over users"): ``scipy.stats.wilcoxon`` (zero_method="wilcox", zero
  differences dropped, two-sided, scipy's default method) on the per-(cell, user) differences of all cells pooled;
  p = 1.0 when every difference is 0.
* ``verdict``: "better" when the cell-level test has p < alpha and a positive mean difference and the user-level
  test (when there is one) also has p < alpha and a positive mean difference; "worse" likewise with negative mean
  differences; "no detectable difference" otherwise, including when either p-value is None. Both the seed-level and
  the user-level test must agree.

Everything is deterministic: the bootstrap draws only from its explicit ``seed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from scipy import stats as _st

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"

TEST_CELLS = "paired t over cells"
TEST_BOOTSTRAP = "paired bootstrap over users (stratified by cell)"
TEST_WILCOXON = "Wilcoxon signed-rank over users"

# Largest number of bootstrap indices drawn at once (bounds memory for big cells; depends only on the cell size).
_CHUNK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and t-interval of a list of values (None where undefined)."""
    n: int
    mean: Optional[float]
    std: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]


@dataclass(frozen=True)
class PairedTest:
    """One model-vs-reference comparison: pairs, mean difference (model - reference), interval, p-value, test name."""
    n: int
    mean_diff: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    p_value: Optional[float]
    test: str


def _missing(value) -> bool:
    """True when ``value`` is None or NaN."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        raise TypeError(f"not a number: {value!r}") from None


def _check_confidence(confidence: float) -> float:
    """``confidence`` as a float when it lies strictly between 0 and 1, else ValueError."""
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return confidence


def _ordered(keys) -> list:
    """``keys`` in a fixed order (sorted; by repr when the keys do not compare), so dict order never matters."""
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=repr)


def _t_interval(mean: float, std: float, n: int, confidence: float) -> tuple:
    """Two-sided t-interval mean ± t_{n-1} * std / sqrt(n)."""
    half = float(_st.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def summarize(values: Iterable, confidence: float = 0.95) -> Summary:
    """Mean, sample std (ddof=1) and two-sided t-interval of ``values``, None and NaN dropped."""
    confidence = _check_confidence(confidence)
    kept = np.array([float(v) for v in values if not _missing(v)], dtype=float)
    n = int(kept.size)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(kept.mean())
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = float(kept.std(ddof=1))
    low, high = _t_interval(mean, std, n, confidence)
    return Summary(n, mean, std, low, high)


def paired_cells(model_values: dict, reference_values: dict, confidence: float = 0.95) -> PairedTest:
    """Two-sided paired t-test over the cells both models have (``scipy.stats.ttest_rel``), model - reference."""
    confidence = _check_confidence(confidence)
    keys = [k for k in _ordered(model_values) if k in reference_values
            and not _missing(model_values[k]) and not _missing(reference_values[k])]
    diffs = np.array([float(model_values[k]) - float(reference_values[k]) for k in keys], dtype=float)
    n = int(diffs.size)
    if n == 0:
        return PairedTest(0, None, None, None, None, TEST_CELLS)
    mean = float(diffs.mean())
    if n == 1:
        return PairedTest(1, mean, None, None, None, TEST_CELLS)
    std = float(diffs.std(ddof=1))
    low, high = _t_interval(mean, std, n, confidence)
    if std == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        t = mean / (std / math.sqrt(n))
        p = float(min(1.0, 2.0 * _st.t.sf(abs(t), n - 1)))
    return PairedTest(n, mean, low, high, p, TEST_CELLS)


def _paired_user_diffs(model_users: dict, reference_users: dict) -> list:
    """Per cell present on both sides, the array of model - reference over users both sides scored (fixed order)."""
    out = []
    for cell in _ordered(model_users):
        if cell not in reference_users:
            continue
        mod, ref = model_users[cell], reference_users[cell]
        users = [u for u in _ordered(mod) if u in ref and not _missing(mod[u]) and not _missing(ref[u])]
        if users:
            out.append(np.array([float(mod[u]) - float(ref[u]) for u in users], dtype=float))
    return out


def paired_bootstrap_users(model_users: dict, reference_users: dict, n_boot: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> PairedTest:
    """Per-user paired bootstrap stratified by cell; p = min(1, 2 * min(share of replicates <= 0, share >= 0))."""
    confidence = _check_confidence(confidence)
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    cells = _paired_user_diffs(model_users, reference_users)
    n = int(sum(d.size for d in cells))
    if not cells:
        return PairedTest(0, None, None, None, None, TEST_BOOTSTRAP)
    mean = float(np.mean([d.mean() for d in cells]))
    rng = np.random.default_rng(seed)
    replicates = np.zeros(n_boot, dtype=float)
    for d in cells:
        m = d.size
        rows = max(1, _CHUNK_ELEMENTS // m)
        for start in range(0, n_boot, rows):
            stop = min(n_boot, start + rows)
            idx = rng.integers(0, m, size=(stop - start, m), dtype=np.intp)
            replicates[start:stop] += d[idx].mean(axis=1)
    replicates /= len(cells)
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [100.0 * tail, 100.0 * (1.0 - tail)])
    p = min(1.0, 2.0 * min(float(np.mean(replicates <= 0.0)), float(np.mean(replicates >= 0.0))))
    return PairedTest(n, mean, float(low), float(high), p, TEST_BOOTSTRAP)


def wilcoxon_users(model_users: dict, reference_users: dict) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test (zero_method="wilcox") on the pooled per-(cell, user) differences."""
    cells = _paired_user_diffs(model_users, reference_users)
    diffs = np.concatenate(cells) if cells else np.zeros(0, dtype=float)
    n = int(diffs.size)
    if n == 0:
        return PairedTest(0, None, None, None, None, TEST_WILCOXON)
    mean = float(diffs.mean())
    if not np.any(diffs != 0.0):
        return PairedTest(n, mean, None, None, 1.0, TEST_WILCOXON)
    try:
        p = float(_st.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
    except ValueError:  # older scipy raises when every difference is 0 (handled above); kept as a safety net
        p = 1.0
    return PairedTest(n, mean, None, None, p, TEST_WILCOXON)


def _significant(test: PairedTest, alpha: float, sign: int) -> bool:
    """True when ``test`` has p < alpha and a mean difference of the given sign (+1 or -1)."""
    if test.p_value is None or test.mean_diff is None or math.isnan(test.p_value):
        return False
    return test.p_value < alpha and test.mean_diff * sign > 0


def verdict(cell_test: PairedTest, user_test: Optional[PairedTest], alpha: float = 0.05) -> str:
    """One of "better", "worse", "no detectable difference"; the cell test and the user test (if any) must agree."""
    for sign, word in ((1, BETTER), (-1, WORSE)):
        if _significant(cell_test, alpha, sign) and (user_test is None or _significant(user_test, alpha, sign)):
            return word
    return NO_DIFFERENCE
