"""recbole_sid.stats against hand-computed answers: t-intervals, paired t, stratified bootstrap, Wilcoxon, verdict."""
import math

import numpy as np
import pytest
from scipy import stats as st

from recbole_sid.stats import (
    PairedTest,
    Summary,
    paired_bootstrap_users,
    paired_cells,
    summarize,
    verdict,
    wilcoxon_users,
)

T_975_DF3 = 3.182446305284263
# Student t with 2 degrees of freedom has a closed form: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so
# t_{0.975,2} = 0.95 * sqrt(2 / (4 * 0.975 * 0.025)).
T_975_DF2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))


# ---------------------------------------------------------------- summarize

def test_summarize_four_values():
    s = summarize([1, 2, 3, 4])
    std = math.sqrt(5 / 3)
    assert s.n == 4
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(std)
    assert s.ci_low == pytest.approx(2.5 - T_975_DF3 * std / 2)
    assert s.ci_high == pytest.approx(2.5 + T_975_DF3 * std / 2)
    assert isinstance(s, Summary)


def test_summarize_confidence_changes_interval():
    wide, narrow = summarize([1, 2, 3, 4], confidence=0.99), summarize([1, 2, 3, 4], confidence=0.9)
    assert wide.ci_low < narrow.ci_low < 2.5 < narrow.ci_high < wide.ci_high


def test_summarize_one_value_has_no_spread():
    s = summarize([0.3])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (1, pytest.approx(0.3), None, None, None)


def test_summarize_drops_none_and_nan():
    s = summarize([1.0, None, float("nan"), 2.0, np.nan, 3.0, 4.0])
    assert s.n == 4
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))


def test_summarize_empty():
    assert summarize([None, float("nan")]) == Summary(0, None, None, None, None)
    assert summarize([]) == Summary(0, None, None, None, None)


def test_summarize_rejects_bad_confidence():
    with pytest.raises(ValueError):
        summarize([1, 2], confidence=1.0)


# ---------------------------------------------------------------- paired_cells

MODEL = {(0, 0): 1.0, (0, 1): 2.0, (1, 0): 4.0}
REFERENCE = {(0, 0): 0.5, (0, 1): 1.0, (1, 0): 2.5}


def test_paired_cells_known_answer():
    r = paired_cells(MODEL, REFERENCE)
    # differences 0.5, 1, 1.5: mean 1, std 0.5, t = 1 / (0.5 / sqrt 3) = 2 sqrt 3 on 2 degrees of freedom;
    # two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14)
    assert r.n == 3
    assert r.mean_diff == pytest.approx(1.0)
    assert r.p_value == pytest.approx(1 - math.sqrt(6 / 7))
    assert r.p_value == pytest.approx(0.07417990022744854)
    assert r.p_value == pytest.approx(2 * st.t.sf(2 * math.sqrt(3), 2))
    half = T_975_DF2 * 0.5 / math.sqrt(3)
    assert r.ci_low == pytest.approx(1.0 - half)
    assert r.ci_high == pytest.approx(1.0 + half)
    assert r.test == "paired t over cells"


def test_paired_cells_matches_ttest_rel():
    keys = list(MODEL)
    expected = st.ttest_rel([MODEL[k] for k in keys], [REFERENCE[k] for k in keys])
    assert paired_cells(MODEL, REFERENCE).p_value == pytest.approx(float(expected.pvalue))


def test_paired_cells_negative_difference_is_symmetric():
    r = paired_cells(REFERENCE, MODEL)
    assert r.mean_diff == pytest.approx(-1.0)
    assert r.p_value == pytest.approx(1 - math.sqrt(6 / 7))


def test_paired_cells_ignores_unmatched_and_missing():
    model = {**MODEL, (2, 0): 100.0, (2, 1): None, (3, 0): 7.0}
    reference = {**REFERENCE, (9, 9): -100.0, (2, 1): 1.0, (3, 0): float("nan")}
    r = paired_cells(model, reference)
    assert r.n == 3
    assert r.mean_diff == pytest.approx(1.0)
    assert r.p_value == pytest.approx(1 - math.sqrt(6 / 7))


def test_paired_cells_identical_nonzero_differences_p_zero():
    r = paired_cells({"a": 1.5, "b": 2.5, "c": 3.5}, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert r.mean_diff == pytest.approx(0.5)
    assert r.p_value == 0.0


def test_paired_cells_zero_differences_p_one():
    r = paired_cells({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0})
    assert r.mean_diff == 0.0
    assert r.p_value == 1.0


def test_paired_cells_fewer_than_two_pairs():
    one = paired_cells({"a": 2.0, "b": 3.0}, {"a": 1.0})
    assert (one.n, one.mean_diff, one.ci_low, one.ci_high, one.p_value) == (1, 1.0, None, None, None)
    none = paired_cells({"a": 2.0}, {"b": 1.0})
    assert (none.n, none.mean_diff, none.p_value) == (0, None, None)


# ---------------------------------------------------------------- paired_bootstrap_users

def _constant_shift_fixture(shift=0.1):
    reference = {(0, 0): {u: 0.5 for u in range(50)}, (1, 0): {u: 0.25 for u in range(30)}}
    model = {cell: {u: v + shift for u, v in users.items()} for cell, users in reference.items()}
    return model, reference


def test_bootstrap_constant_shift():
    model, reference = _constant_shift_fixture()
    r = paired_bootstrap_users(model, reference, n_boot=500, seed=0)
    assert r.n == 80
    assert r.mean_diff == pytest.approx(0.1)
    assert r.ci_low == pytest.approx(0.1)
    assert r.ci_high == pytest.approx(0.1)
    assert r.p_value == 0.0  # every replicate is > 0: share <= 0 is 0
    assert r.test == "paired bootstrap over users (stratified by cell)"


def test_bootstrap_negative_constant_shift():
    model, reference = _constant_shift_fixture(-0.1)
    r = paired_bootstrap_users(model, reference, n_boot=200, seed=0)
    assert r.mean_diff == pytest.approx(-0.1)
    assert r.p_value == 0.0


def test_bootstrap_zero_differences_p_one():
    _, reference = _constant_shift_fixture()
    r = paired_bootstrap_users(reference, reference, n_boot=200, seed=0)
    assert (r.mean_diff, r.ci_low, r.ci_high, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_symmetric_differences_not_significant():
    reference = {cell: {u: 0.0 for u in range(400)} for cell in [(0, 0), (0, 1), (1, 0)]}
    model = {cell: {u: (1.0 if u % 2 else -1.0) for u in users} for cell, users in reference.items()}
    r = paired_bootstrap_users(model, reference, seed=0)
    assert r.n == 1200
    assert r.mean_diff == pytest.approx(0.0)
    assert r.ci_low < 0.0 < r.ci_high
    assert r.p_value > 0.2


def test_bootstrap_two_user_known_distribution():
    # One cell, differences +1 and -3: a replicate's mean is 1 (prob 1/4), -1 (1/2) or -3 (1/4).
    # share <= 0 -> 3/4, share >= 0 -> 1/4, so p -> 2 * 1/4 = 0.5; percentiles 2.5 / 97.5 -> -3 / 1.
    r = paired_bootstrap_users({"c": {"u": 1.0, "v": -3.0}}, {"c": {"u": 0.0, "v": 0.0}}, n_boot=20000, seed=1)
    assert r.mean_diff == pytest.approx(-1.0)
    assert r.p_value == pytest.approx(0.5, abs=0.03)
    assert r.ci_low == pytest.approx(-3.0)
    assert r.ci_high == pytest.approx(1.0)


def test_bootstrap_cells_weigh_equally():
    model = {"A": {0: 1.0}, "B": {u: 0.0 for u in range(100)}}
    reference = {"A": {0: 0.0}, "B": {u: 0.0 for u in range(100)}}
    r = paired_bootstrap_users(model, reference, n_boot=100, seed=0)
    assert r.n == 101
    assert r.mean_diff == pytest.approx(0.5)  # not 1/101


def test_bootstrap_same_seed_same_result_and_seed_matters():
    rng = np.random.default_rng(123)
    reference = {cell: {u: float(rng.random()) for u in range(300)} for cell in range(3)}
    model = {cell: {u: float(rng.random()) for u in users} for cell, users in reference.items()}
    first = paired_bootstrap_users(model, reference, seed=7)
    assert paired_bootstrap_users(model, reference, seed=7) == first
    # dict order does not matter either
    shuffled = {cell: dict(reversed(list(users.items()))) for cell, users in reversed(list(model.items()))}
    assert paired_bootstrap_users(shuffled, reference, seed=7) == first
    other = paired_bootstrap_users(model, reference, seed=8)
    assert other.mean_diff == first.mean_diff
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_bootstrap_drops_unpaired_users_and_cells():
    model = {"A": {0: 1.0, 1: 1.0, 2: 50.0, 3: None}, "B": {0: 1.0}, "only_model": {0: 99.0}}
    reference = {"A": {0: 0.5, 1: 0.5, 3: 0.0, 4: -50.0}, "B": {0: 0.5}, "only_reference": {0: -99.0}}
    r = paired_bootstrap_users(model, reference, n_boot=100, seed=0)
    assert r.n == 3  # users 0 and 1 of A, user 0 of B
    assert r.mean_diff == pytest.approx(0.5)
    assert r.p_value == 0.0


def test_bootstrap_nothing_paired():
    r = paired_bootstrap_users({"A": {0: 1.0}}, {"B": {0: 1.0}})
    assert r == PairedTest(0, None, None, None, None, "paired bootstrap over users (stratified by cell)")


def test_bootstrap_confidence_keyword():
    rng = np.random.default_rng(5)
    reference = {0: {u: 0.0 for u in range(200)}}
    model = {0: {u: float(rng.normal()) for u in range(200)}}
    wide = paired_bootstrap_users(model, reference, seed=0, confidence=0.99)
    narrow = paired_bootstrap_users(model, reference, seed=0, confidence=0.5)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


# ---------------------------------------------------------------- wilcoxon_users

def test_wilcoxon_known_answer():
    # pooled differences 1, -2, 3 (cell A) and 4, 5, 0 (cell B); user 9 unpaired.
    model = {"A": {0: 1.0, 1: 0.0, 2: 3.0}, "B": {0: 4.0, 1: 5.0, 2: 1.0, 9: 100.0}}
    reference = {"A": {0: 0.0, 1: 2.0, 2: 0.0}, "B": {0: 0.0, 1: 0.0, 2: 1.0}}
    r = wilcoxon_users(model, reference)
    assert r.n == 6
    assert r.mean_diff == pytest.approx(11 / 6)
    assert r.ci_low is None and r.ci_high is None
    # zero dropped; ranks 1..5, W- = 2; exact two-sided p = 2 * #{subsets with rank sum <= 2} / 2^5 = 2 * 3 / 32
    assert r.p_value == pytest.approx(0.1875)
    expected = st.wilcoxon([1.0, -2.0, 3.0, 4.0, 5.0, 0.0], zero_method="wilcox", alternative="two-sided")
    assert r.p_value == pytest.approx(float(expected.pvalue))
    assert r.test == "Wilcoxon signed-rank over users"


def test_wilcoxon_matches_scipy_on_larger_sample():
    rng = np.random.default_rng(3)
    reference = {cell: {u: float(rng.random()) for u in range(120)} for cell in range(2)}
    model = {cell: {u: v + float(rng.normal(0.05, 0.3)) for u, v in users.items()} for cell, users in reference.items()}
    diffs = [model[c][u] - reference[c][u] for c in range(2) for u in range(120)]
    r = wilcoxon_users(model, reference)
    assert r.n == 240
    assert r.p_value == pytest.approx(float(st.wilcoxon(diffs, zero_method="wilcox").pvalue))


def test_wilcoxon_all_zero_p_one():
    users = {"A": {0: 0.3, 1: 0.7}, "B": {0: 0.1}}
    r = wilcoxon_users(users, users)
    assert (r.n, r.mean_diff, r.p_value) == (3, 0.0, 1.0)


# ---------------------------------------------------------------- verdict

def _t(mean_diff, p_value):
    return PairedTest(5, mean_diff, None, None, p_value, "t")


@pytest.mark.parametrize("cell, user, expected", [
    (_t(0.1, 0.01), _t(0.05, 0.001), "better"),
    (_t(0.1, 0.01), None, "better"),
    (_t(-0.1, 0.01), _t(-0.05, 0.001), "worse"),
    (_t(-0.1, 0.01), None, "worse"),
    (_t(0.1, 0.01), _t(0.05, 0.2), "no detectable difference"),   # user level not significant
    (_t(0.1, 0.2), _t(0.05, 0.001), "no detectable difference"),   # cell level not significant
    (_t(0.1, 0.01), _t(-0.05, 0.001), "no detectable difference"),  # significant in opposite directions
    (_t(-0.1, 0.01), _t(0.05, 0.001), "no detectable difference"),
    (_t(0.1, None), _t(0.05, 0.001), "no detectable difference"),  # p None: not significant
    (_t(0.1, 0.01), _t(0.05, None), "no detectable difference"),
    (_t(0.1, None), None, "no detectable difference"),
    (_t(0.1, 0.05), None, "no detectable difference"),             # p == alpha is not < alpha
    (_t(0.0, 0.01), None, "no detectable difference"),
])
def test_verdict_truth_table(cell, user, expected):
    assert verdict(cell, user) == expected


def test_verdict_alpha():
    assert verdict(_t(0.1, 0.03), None, alpha=0.01) == "no detectable difference"
    assert verdict(_t(0.1, 0.03), None, alpha=0.05) == "better"
