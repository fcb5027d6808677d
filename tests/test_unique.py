"""Collision-aware last level: colliding items get distinct last codes by min-cost assignment; others untouched."""
import itertools

import numpy as np

from recbole_sid.quantization import assign_residual
from recbole_sid.quantization.unique import unique_last_level
from recbole_sid.quality import collision_rate


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    codebooks = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(16, 3)).astype(np.float32) * 0.3]
    x = rng.normal(size=(24, 3)).astype(np.float32)
    x[10:13] = x[9] + 1e-4 * rng.normal(size=(3, 3))  # near-duplicates: they collide under greedy assignment
    return x, codebooks, assign_residual(x, codebooks)


def test_colliding_items_become_unique_and_others_keep_their_codes():
    x, codebooks, greedy = _setup()
    assert collision_rate(greedy) > 0
    fixed, changed = unique_last_level(x, codebooks, greedy)
    assert changed > 0 and collision_rate(fixed) == 0.0
    assert (fixed[:, 0] == greedy[:, 0]).all()  # only the last level moves
    _, inverse, counts = np.unique(greedy, axis=0, return_inverse=True, return_counts=True)
    prefix_groups = {tuple(greedy[i, :-1]) for i in np.where(counts[inverse.ravel()] > 1)[0]}
    untouched = [i for i in range(len(x)) if tuple(greedy[i, :-1]) not in prefix_groups]
    assert (fixed[untouched] == greedy[untouched]).all()


def test_assignment_is_min_cost_within_a_group():
    rng = np.random.default_rng(3)
    codebooks = [np.array([[5.0, 0.0], [-5.0, 0.0]], dtype=np.float32), rng.normal(size=(4, 2)).astype(np.float32)]
    x = np.array([[5.0, 0.1], [5.02, 0.1], [4.98, 0.12], [-5.0, 1.0]], dtype=np.float32)
    greedy = assign_residual(x, codebooks)
    assert collision_rate(greedy[:3]) > 0
    fixed, _ = unique_last_level(x, codebooks, greedy)
    residual = x[:3] - codebooks[0][0]
    cost = ((residual[:, None, :] - codebooks[1][None]) ** 2).sum(-1)
    best = min(sum(cost[i, p[i]] for i in range(3)) for p in itertools.permutations(range(4), 3))
    assert np.isclose(sum(cost[i, fixed[i, 1]] for i in range(3)), best, rtol=1e-6)
    assert (fixed[3] == greedy[3]).all()


def test_group_larger_than_k_is_left_to_the_dedup_level():
    codebooks = [np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32) * 0.1]
    x = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (3, 1))  # 3 identical items, only 2 last codes
    greedy = assign_residual(x, codebooks)
    fixed, changed = unique_last_level(x, codebooks, greedy)
    assert changed == 0 and (fixed == greedy).all()
