"""The dedup level: unique SIDs, stable numbering, size = largest bucket, no silent overflow."""
import numpy as np
import pytest

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization import add_dedup_level


def test_hand_example():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2], [0, 0], [3, 3]])
    out, size = add_dedup_level(codes)
    np.testing.assert_array_equal(out, [[1, 2, 0], [1, 2, 1], [0, 0, 0], [1, 2, 2], [0, 0, 1], [3, 3, 0]])
    assert size == 3
    assert out.dtype == np.int64


def test_random_codes_become_unique_and_size_is_largest_bucket():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(2000, 3))  # 64 prefixes for 2000 items: many collisions
    out, size = add_dedup_level(codes)
    np.testing.assert_array_equal(out[:, :3], codes)  # learned levels untouched
    assert len(np.unique(out, axis=0)) == 2000
    _, counts = np.unique(codes, axis=0, return_counts=True)
    assert size == counts.max() == out[:, 3].max() + 1
    # stable: within every bucket the numbers follow input order
    for prefix in np.unique(codes, axis=0)[:10]:
        rows = np.flatnonzero((codes == prefix).all(axis=1))
        np.testing.assert_array_equal(out[rows, 3], np.arange(len(rows)))


def test_already_unique_gets_zeros_and_size_one():
    codes = np.arange(12).reshape(6, 2)
    out, size = add_dedup_level(codes)
    assert size == 1 and (out[:, 2] == 0).all()


def test_overflow_raises_with_size_and_limit():
    codes = np.array([[5, 1]] * 4 + [[0, 0]] * 2)
    out, size = add_dedup_level(codes, max_size=4)  # exactly at the limit is fine
    assert size == 4
    with pytest.raises(QuantizationError, match=r"4 items share the SID prefix \[5, 1\].*max_size=3.*1 bucket"):
        add_dedup_level(codes, max_size=3)


@pytest.mark.parametrize("bad, message", [
    (np.array([1, 2, 3]), "expected a 2-D integer matrix"),
    (np.array([[0.5, 1.0]]), "expected integer codes"),
    (np.array([[0, -1]]), "negative codes"),
    (np.zeros((0, 3), dtype=np.int64), "empty code matrix"),
    (np.zeros((3, 26), dtype=np.int64), "exceed the 26-level limit"),
])
def test_bad_codes(bad, message):
    with pytest.raises(QuantizationError, match=message):
        add_dedup_level(bad)


def test_bad_max_size():
    with pytest.raises(QuantizationError, match="max_size must be a positive integer"):
        add_dedup_level(np.zeros((2, 2), dtype=np.int64), max_size=0)
