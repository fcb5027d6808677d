"""Residual assignment, residual k-means, OPQ, RQ-OPQ, the trainable ResidualQuantizer and the input checks."""
import logging

import numpy as np
import pytest
import torch

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization import (
    ResidualQuantizer,
    assign_residual,
    check_embeddings,
    check_quantizer_params,
    decode_codes,
    kmeans,
    opq_encode,
    residual_kmeans,
    rq_opq_encode,
)


def _data(n=300, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _codebooks(levels=3, k=16, d=8, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((k, d)).astype(np.float32) * (0.5 ** level) for level in range(levels)]


def brute_force_greedy(x, codebooks, distance="l2"):
    """Reference: explicit N x K x D distances per level, in float64."""
    r = np.asarray(x, dtype=np.float64).copy()
    codes = []
    for cb in codebooks:
        cb = np.asarray(cb, dtype=np.float64)
        if distance == "l2":
            idx = ((r[:, None, :] - cb[None, :, :]) ** 2).sum(-1).argmin(1)
        else:
            idx = ((r @ cb.T) / np.linalg.norm(cb, axis=1)).argmax(1)
        codes.append(idx)
        r = r - cb[idx]
    return np.stack(codes, 1), r


# --- assign_residual --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_greedy_assignment_equals_brute_force(distance):
    x, cbs = _data(), _codebooks()
    expected, expected_res = brute_force_greedy(x, cbs, distance)
    codes, residual = assign_residual(x, cbs, distance=distance, return_residual=True)
    assert codes.dtype == np.int64 and codes.shape == (300, 3)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_allclose(residual, expected_res, atol=1e-4)
    codes_t = assign_residual(torch.from_numpy(x), [torch.from_numpy(c) for c in cbs], distance=distance)
    assert codes_t.dtype == torch.long
    np.testing.assert_array_equal(codes_t.numpy(), expected)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_batched_equals_unbatched(backend):
    x, cbs = _data(n=1000), _codebooks()
    if backend == "torch":
        x, cbs = torch.from_numpy(x), [torch.from_numpy(c) for c in cbs]
    whole = assign_residual(x, cbs, batch_size=10 ** 6)
    for batch_size in (1, 7, 256):
        part = assign_residual(x, cbs, batch_size=batch_size)
        assert (part == whole).all()


_MEMORY_PROBE = """
import resource, sys
import numpy as np
from recbole_sid.quantization import assign_residual
n, k, d = 20000, 256, 64
rng = np.random.default_rng(0)
x = rng.standard_normal((n, d), dtype=np.float32)
cbs = [rng.standard_normal((k, d), dtype=np.float32) for _ in range(2)]
assign_residual(x[:100], cbs)  # warm-up: torch's and BLAS' own one-off allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codes = assign_residual(x, cbs, batch_size=int(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_assignment_memory_is_not_n_k_d(backend):
    """Peak RSS growth of a fresh process (the kernel allocates through torch, which tracemalloc does not see)."""
    import subprocess
    import sys

    n, k, d = 20000, 256, 64
    probe = _MEMORY_PROBE if backend == "numpy" else _MEMORY_PROBE.replace(
        "codes = assign_residual(x,", "import torch; codes = assign_residual(torch.from_numpy(x),")
    out = subprocess.run([sys.executable, "-c", probe, "1024"], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    grown = int(out.stdout.strip().splitlines()[-1])
    # N x K x D floats would be 1.3 GB; the kernel's buffers are 1024 x (2 D + K) floats (1.6 MB) + the codes
    assert grown < n * k * d * 4 / 20, f"peak RSS grew {grown} bytes: looks like an N x K x D tensor was built"
    assert grown < 64 * 2 ** 20, f"peak RSS grew {grown / 2 ** 20:.0f} MiB for a {n} x {d} input"


def test_decode_codes_is_sum_of_code_vectors():
    cbs = _codebooks(levels=2, k=4, d=3)
    codes = np.array([[0, 3], [2, 1]])
    out = decode_codes(codes, cbs)
    np.testing.assert_allclose(out[1], cbs[0][2] + cbs[1][1], rtol=1e-6)
    np.testing.assert_allclose(decode_codes(codes[:, :1], cbs), cbs[0][[0, 2]])  # a prefix of levels
    with pytest.raises(QuantizationError, match="outside"):
        decode_codes(np.array([[0, 4]]), cbs)


# --- residual k-means ---------------------------------------------------------------------------------------

def test_residual_kmeans_codes_are_greedy_assignment(caplog):
    x = _data(n=600, d=8)
    with caplog.at_level(logging.INFO, logger="recbole_sid"):
        codes, codebooks = residual_kmeans(x, num_levels=3, codebook_size=16, seed=3, niter=10)
    assert "CPU" in caplog.text  # says which device faiss ran on
    assert codes.shape == (600, 3) and codes.dtype == np.int64
    assert len(codebooks) == 3 and all(cb.shape == (16, 8) and cb.dtype == np.float32 for cb in codebooks)
    np.testing.assert_array_equal(codes, brute_force_greedy(x, codebooks)[0])
    # level 1 is k-means of x itself: same faiss call, same centroids
    np.testing.assert_allclose(codebooks[0], kmeans(x, 16, niter=10, seed=3), atol=1e-6)
    again, _ = residual_kmeans(x, num_levels=3, codebook_size=16, seed=3, niter=10)
    np.testing.assert_array_equal(codes, again)  # deterministic on CPU
    other, other_cbs = residual_kmeans(x, num_levels=3, codebook_size=16, seed=4, niter=10)
    assert not np.allclose(codebooks[0], other_cbs[0])


def test_residual_kmeans_reduces_error_level_by_level():
    x = _data(n=600, d=8)
    codes, codebooks = residual_kmeans(x, num_levels=3, codebook_size=16, niter=10)
    errors = [np.mean((x - decode_codes(codes[:, :lv], codebooks)) ** 2) for lv in range(4)]
    assert errors[0] > errors[1] > errors[2] > errors[3]


# --- OPQ and RQ-OPQ ---------------------------------------------------------------------------------------------

def test_opq_codes_and_codec():
    x = _data(n=512, d=16)
    res = opq_encode(x, num_subspaces=4, nbits=4, seed=0, niter=8, opq_niter=3)
    assert res.codes.shape == (512, 4) and res.codes.dtype == np.int64
    assert res.codes.min() >= 0 and res.codes.max() < 16 and res.centroids.shape == (4, 16, 4)
    np.testing.assert_allclose(res.rotation @ res.rotation.T, np.eye(16), atol=1e-4)
    # every sub-vector of the rotated x gets its nearest centroid
    y = x @ res.rotation.T
    for j in range(4):
        sub = y[:, 4 * j:4 * j + 4]
        nearest = ((sub[:, None, :] - res.centroids[j][None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(res.codes[:, j], nearest)
    assert np.mean((res.decode(res.codes) - x) ** 2) < np.mean(x ** 2)
    again = opq_encode(x, num_subspaces=4, nbits=4, seed=0, niter=8, opq_niter=3)
    np.testing.assert_array_equal(res.codes, again.codes)


def test_opq_subspaces_must_divide_dim():
    with pytest.raises(QuantizationError, match=r"M=5 must divide the vector dimension D=16.*\[1, 2, 4, 8, 16\]"):
        opq_encode(_data(n=512, d=16), num_subspaces=5, nbits=4)
    with pytest.raises(QuantizationError, match=r"only 100 vectors for 2\*\*nbits=256.*nbits <= 6"):
        opq_encode(_data(n=100, d=16), num_subspaces=4, nbits=8)


def test_rq_opq_codes_come_from_the_final_residual():
    x = _data(n=512, d=16)
    res = rq_opq_encode(x, num_levels=2, codebook_size=8, opq_subspaces=4, opq_nbits=4, seed=0, niter=8,
                        opq_niter=3)
    rq_codes, rq_cbs = residual_kmeans(x, 2, 8, seed=0, niter=8)
    np.testing.assert_array_equal(res.rq_codes, rq_codes)
    residual = x - decode_codes(rq_codes, rq_cbs)
    np.testing.assert_allclose(res.residual(x), residual, atol=1e-5)
    np.testing.assert_array_equal(res.opq_codes, res.opq.encode(residual))
    # the same codec applied to the raw vectors gives other codes: OPQ saw the residual, not x
    assert (res.opq.encode(x) != res.opq_codes).mean() > 0.5
    assert np.mean((res.decode() - x) ** 2) < np.mean(residual ** 2)
    # given RQ codebooks (e.g. from an RQ-VAE): greedy assignment to them, OPQ on what is left
    given = rq_opq_encode(x, opq_subspaces=4, opq_nbits=4, rq_codebooks=rq_cbs, niter=8, opq_niter=3)
    np.testing.assert_array_equal(given.rq_codes, rq_codes)


# --- ResidualQuantizer --------------------------------------------------------------------------------------

def _rq(**kw):
    args = dict(num_levels=3, codebook_size=16, dim=8, kmeans_iters=5, seed=0)
    args.update(kw)
    return ResidualQuantizer(**args)


def test_forward_shapes_values_and_codes():
    rq = _rq()
    x = torch.from_numpy(_data(n=200))
    out = rq(x)
    assert out.codes.shape == (200, 3) and out.codes.dtype == torch.long
    assert out.quantized.shape == x.shape and out.loss.dim() == 0
    cbs = [cb.weight.detach().numpy() for cb in rq.codebooks]
    np.testing.assert_array_equal(out.codes.numpy(), brute_force_greedy(x.numpy(), cbs)[0])
    np.testing.assert_allclose(out.quantized.detach(), rq.decode(out.codes).detach(), atol=1e-5)
    assert torch.equal(rq.encode(x), out.codes)
    torch.testing.assert_close(out.loss, out.codebook_loss + out.commitment_loss)
    # usage counts = histogram of the chosen codes
    for level in range(3):
        np.testing.assert_array_equal(rq.code_usage()[level].numpy(), np.bincount(out.codes[:, level], minlength=16))


def test_straight_through_and_loss_gradients():
    rq = _rq(beta=0.25)
    rq(torch.from_numpy(_data(n=200)))  # k-means init
    x = torch.from_numpy(_data(n=50, seed=5)).requires_grad_(True)

    out = rq(x)
    out.quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # straight-through: identity gradient
    assert all(cb.weight.grad is None for cb in rq.codebooks)

    x.grad = None
    out = rq(x)
    out.codebook_loss.backward()
    assert x.grad is None  # the codebook loss does not move the input
    for level, cb in enumerate(rq.codebooks):
        used = torch.unique(out.codes[:, level])
        assert cb.weight.grad[used].abs().sum() > 0
        unused = torch.ones(16, dtype=torch.bool)
        unused[used] = False
        assert cb.weight.grad[unused].abs().sum() == 0
        cb.weight.grad = None

    out = rq(x)
    out.commitment_loss.backward()
    assert all(cb.weight.grad is None or cb.weight.grad.abs().sum() == 0 for cb in rq.codebooks)
    # d/dx of beta * sum_l mean||r_l - sg(e_l)||^2 with r_l = x - sum_{j<l} sg(e_j)
    cbs = [cb.weight.detach() for cb in rq.codebooks]
    r, expected = x.detach().clone(), torch.zeros_like(x)
    for level in range(3):
        e = cbs[level][out.codes[:, level]]
        expected += 0.25 * 2 * (r - e) / r.numel()
        r = r - e
    torch.testing.assert_close(x.grad, expected)


def test_kmeans_init_runs_once_on_the_first_training_batch():
    rq = _rq()
    first, second = torch.from_numpy(_data(n=200)), torch.from_numpy(_data(n=200, seed=9) * 3)
    rq.eval()
    rq(first)
    assert rq.kmeans_init_calls == 0 and not bool(rq.initialized)  # eval forwards never initialise
    rq.train()
    rq(first)
    assert rq.kmeans_init_calls == 1 and bool(rq.initialized)
    np.testing.assert_allclose(rq.codebooks[0].weight.detach().numpy(), kmeans(first.numpy(), 16, niter=5, seed=0),
                               atol=1e-6)
    weights = [cb.weight.detach().clone() for cb in rq.codebooks]
    rq(second)
    assert rq.kmeans_init_calls == 1
    assert all(torch.equal(w, cb.weight) for w, cb in zip(weights, rq.codebooks))
    # a reloaded quantizer keeps its codebooks: the 'initialized' flag is in the state dict
    clone = _rq(seed=1)
    clone.load_state_dict(rq.state_dict())
    clone(second)
    assert clone.kmeans_init_calls == 0 and torch.equal(clone.codebooks[0].weight, rq.codebooks[0].weight)


def test_kmeans_init_pads_a_batch_smaller_than_k():
    rq = _rq(codebook_size=32)
    out = rq(torch.from_numpy(_data(n=10)))
    assert bool(rq.initialized) and out.codes.shape == (10, 3)
    assert torch.isfinite(torch.stack([cb.weight for cb in rq.codebooks])).all()
    # the 10 real rows are reproduced almost exactly at level 1 (their own centroids exist)
    assert out.commitment_loss.item() < 1e-3


def test_dead_code_reseeding_changes_exactly_the_dead_codes():
    rq = _rq(dead_code_threshold=3)
    rq.init_codebooks(torch.from_numpy(_data(n=400)))
    subset = torch.from_numpy(_data(n=400)[:40])  # a small batch leaves many codes (nearly) unused
    rq(subset)
    usage = rq.code_usage()
    dead = usage < 3
    assert 0 < int(dead.sum()) < dead.numel()
    before = [cb.weight.detach().clone() for cb in rq.codebooks]
    n = rq.reseed_dead_codes(subset)
    assert n == int(dead.sum())
    for level, cb in enumerate(rq.codebooks):
        changed = (cb.weight.detach() != before[level]).any(dim=1)
        assert torch.equal(changed, dead[level])
    # level-1 codes are re-seeded with rows of the data itself
    new = rq.codebooks[0].weight.detach()[dead[0]]
    assert all((subset == row).all(dim=1).any() for row in new)
    assert int(rq.code_usage().sum()) == 0  # counts restart


def test_dead_codes_counted_over_every_row_not_the_sampled_batch():
    """``recount=True`` counts usage by assigning every row given (e.g. all items once per epoch): a code that only
    rare rows use, absent from the training batches, is not dead and keeps its vector."""
    rq = _rq(dead_code_threshold=1, codebook_size=16)
    x = torch.from_numpy(_data(n=400))
    rq.init_codebooks(x)
    rq(x[:20])  # a training forward that saw only a few rows: by its counts many codes look dead
    looks_dead = int((rq.code_usage() < 1).sum())
    before = [cb.weight.detach().clone() for cb in rq.codebooks]
    from recbole_sid.quantization import assign_residual

    codes = assign_residual(x, [cb.weight for cb in rq.codebooks])
    used_by_all = torch.zeros(rq.num_levels, rq.codebook_size, dtype=torch.bool)
    for level in range(rq.num_levels):
        used_by_all[level, codes[:, level]] = True
    n = rq.reseed_dead_codes(x, recount=True)
    assert looks_dead > n  # codes of rows outside the batch are not re-seeded
    level1_changed = (rq.codebooks[0].weight.detach() != before[0]).any(dim=1)
    assert not bool((level1_changed & used_by_all[0]).any())  # a level-1 code any row uses keeps its vector
    assert n == int((~used_by_all[0]).sum()) + int(sum(  # later levels: counted on the updated residuals
        (cb.weight.detach() != b).any(dim=1).sum() for cb, b in zip(rq.codebooks[1:], before[1:])))


def test_no_reseeding_without_threshold():
    rq = _rq(dead_code_threshold=0)
    x = torch.from_numpy(_data(n=100))
    rq(x)
    before = [cb.weight.detach().clone() for cb in rq.codebooks]
    assert rq.reseed_dead_codes(x) == 0
    assert all(torch.equal(b, cb.weight) for b, cb in zip(before, rq.codebooks))


def test_same_seed_same_codes():
    x = torch.from_numpy(_data(n=300))
    a, b, c = _rq(seed=7), _rq(seed=7), _rq(seed=8)
    assert torch.equal(a(x).codes, b(x).codes)
    assert all(torch.equal(p, q) for p, q in zip(a.codebooks.parameters(), b.codebooks.parameters()))
    c(x)
    assert not torch.equal(a.codebooks[0].weight, c.codebooks[0].weight)
    # no kmeans init: the uniform codebook init is seeded too, and leaves torch's global RNG alone
    state = torch.random.get_rng_state()
    d, e = _rq(seed=3, kmeans_init=False), _rq(seed=3, kmeans_init=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(d.codebooks[1].weight, e.codebooks[1].weight)


def test_cosine_distance_quantizer():
    rq = _rq(distance="cosine", kmeans_init=False)
    x = torch.from_numpy(_data(n=100))
    cbs = [cb.weight.detach().numpy() for cb in rq.codebooks]
    np.testing.assert_array_equal(rq.encode(x).numpy(), brute_force_greedy(x.numpy(), cbs, "cosine")[0])


# --- input checks -------------------------------------------------------------------------------------------

def test_nan_rows_are_reported_by_count_and_index():
    x = _data(n=50)
    x[[3, 17], 1] = np.nan
    x[40, 0] = np.inf
    with pytest.raises(QuantizationError,
                       match=r"item vectors: 3 of 50 rows contain NaN or Inf \(row indices 3, 17, 40\)"):
        check_embeddings(x, name="item vectors")
    with pytest.raises(QuantizationError, match="3 of 50 rows"):
        residual_kmeans(x, 2, 4)
    rq = _rq()
    with pytest.raises(QuantizationError, match=r"row indices 3, 17, 40"):
        rq(torch.from_numpy(x))  # the k-means init batch is checked
    with pytest.raises(QuantizationError, match="row indices 3, 17, 40"):
        rq.encode(torch.from_numpy(x))
    huge = np.full((4, 3), 3e38, dtype=np.float32)  # finite, but their sum overflows: still accepted
    assert check_embeddings(huge).shape == (4, 3) and check_embeddings(torch.from_numpy(huge)).shape == (4, 3)
    many = _data(n=50)
    many[:, 0] = np.nan
    with pytest.raises(QuantizationError, match=r"0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(40 more\)"):
        check_embeddings(many)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(5), r"expected a 2-D matrix \[n_items, dim\], got shape \(5,\)"),
    (np.zeros((0, 4)), "empty matrix"),
    (np.array([["a", "b"]]), "expected a numeric matrix"),
])
def test_bad_embedding_shapes(bad, message):
    with pytest.raises(QuantizationError, match=message):
        check_embeddings(bad)


@pytest.mark.parametrize("levels, k, n, message", [
    (3, 1, None, r"codebook_size=1 is out of range: need 2 <= codebook_size <= 65536"),
    (3, 65537, None, r"codebook_size=65537 is out of range"),
    (0, 256, None, r"num_levels=0 is out of range: need 1 <= num_levels <= 26"),
    (27, 256, None, r"num_levels=27 is out of range"),
    (3, 256.0, None, r"codebook_size must be an integer"),
    (True, 256, None, r"num_levels must be an integer"),
    (3, 256, 100, r"only 100 items for codebook_size=256.*smaller codebook_size, e\.g\. codebook_size=64"),
])
def test_bad_quantizer_params(levels, k, n, message):
    with pytest.raises(QuantizationError, match=message):
        check_quantizer_params(levels, k, n_items=n)


def test_quantizers_reject_bad_settings():
    with pytest.raises(QuantizationError, match=r"only 10 items for codebook_size=16.*codebook_size=8"):
        residual_kmeans(_data(n=10), 2, 16)
    with pytest.raises(QuantizationError, match="codebook_size=70000 is out of range"):
        ResidualQuantizer(codebook_size=70000)
    with pytest.raises(QuantizationError, match="distance='dot' is not supported"):
        ResidualQuantizer(distance="dot")
    with pytest.raises(QuantizationError, match="beta"):
        ResidualQuantizer(beta=-1.0)
    with pytest.raises(QuantizationError, match=r"expected a tensor of shape \[N, 8\], got \(4, 5\)"):
        _rq()(torch.zeros(4, 5))
    with pytest.raises(QuantizationError, match=r"match the codebooks"):
        assign_residual(_data(d=4), _codebooks(d=8))
    with pytest.raises(QuantizationError, match="batch_size must be a positive integer"):
        assign_residual(_data(), _codebooks(), batch_size=0)


def test_reseeding_is_not_logged_per_call_but_per_epoch(caplog):
    """A run used to print one INFO line per re-seed call (99 in one DAS run); now the quantizer logs at DEBUG and
    the training loop reports one number per epoch (``dead_codes_reseeded`` in the phase-1 log line)."""
    from recbole_sid.quantization import RQVAE
    from recbole_sid.tokenizers.base import PhaseLog
    from recbole_sid.tokenizers.stages import fit_rqvae

    x = torch.from_numpy(_data(n=300))
    rqvae = RQVAE(in_dim=x.shape[1], hidden_dims=[16], code_dim=8, num_levels=2, codebook_size=64,
                  dead_code_threshold=5, kmeans_iters=5)
    log = PhaseLog()
    with caplog.at_level("INFO"):
        fit_rqvae(rqvae, x, epochs=4, lr=1e-2, batch_size=64, log=log)
    assert not [r for r in caplog.records if "re-seeded" in r.getMessage() and r.levelno >= 20]
    epoch_lines = [r.getMessage() for r in caplog.records if "phase 1 [rqvae] epoch" in r.getMessage()]
    assert len(epoch_lines) == 4 and "dead_codes_reseeded" in epoch_lines[0]
    assert sum(rec.get("dead_codes_reseeded", 0) for rec in log.history) > 0
