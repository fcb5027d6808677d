"""The TIGER-style RQ-VAE module: outputs, losses, training, determinism, input errors."""
import numpy as np
import pytest
import torch

from recbole_sid.exceptions import QuantizationError
from recbole_sid.quantization import RQVAE, ResidualQuantizer


def clustered(n=512, d=32, clusters=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(clusters, size=n)] + 0.05 * rng.standard_normal((n, d))
    return torch.from_numpy(x.astype(np.float32))


def small(**kw):
    args = dict(in_dim=32, hidden_dims=(64,), code_dim=8, num_levels=2, codebook_size=8, kmeans_iters=5, seed=0)
    args.update(kw)
    return RQVAE(**args)


def test_structure_and_output():
    model = small()
    assert isinstance(model.quantizer, ResidualQuantizer)
    assert model.encoder[0].in_features == 32 and model.encoder[-1].out_features == 8
    assert model.decoder[0].in_features == 8 and model.decoder[-1].out_features == 32
    x = clustered(n=64)
    out = model(x)
    assert out.recon.shape == x.shape and out.latent.shape == (64, 8) and out.quantized.shape == (64, 8)
    assert out.codes.shape == (64, 2) and out.codes.dtype == torch.long
    torch.testing.assert_close(out.recon_loss, torch.mean((out.recon - x) ** 2))
    torch.testing.assert_close(out.loss, out.recon_loss + out.codebook_loss + out.commitment_loss)
    model.eval()
    assert torch.equal(model.encode(x), model(x).codes)
    torch.testing.assert_close(model.decode(model.encode(x)), model(x).recon, atol=1e-5, rtol=1e-5)


def test_reconstruction_gradient_reaches_encoder_through_quantizer():
    model = small()
    out = model(clustered(n=64))
    out.recon_loss.backward()
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0
    assert all(cb.weight.grad is None for cb in model.quantizer.codebooks)  # codebooks learn from their own loss


def test_loss_decreases_on_clustered_data():
    # Adagrad as in TIGER: with Adam at lr 1e-3 the codebooks (moving ~lr per step) lag behind the spreading
    # encoder output for the first few hundred steps, so the total loss rises before it falls.
    x = clustered()
    model = small()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    losses, recon = [], []
    for _ in range(60):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        recon.append(out.recon_loss.item())
    assert np.mean(losses[-5:]) < 0.3 * losses[0], losses[::10]
    assert np.mean(recon[-5:]) < 0.3 * recon[0], recon[::10]
    # the 8 clusters end up with (almost) pure first-level codes
    model.eval()
    assert len(torch.unique(model.encode(x)[:, 0])) >= 4


def test_same_seed_same_model_and_codes():
    x = clustered(n=128)
    a, b, c = small(seed=5), small(seed=5), small(seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)
    a(x), b(x)
    assert torch.equal(a.encode(x), b.encode(x))


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    small(seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_encode_is_deterministic_with_dropout_and_restores_mode():
    model = small(dropout=0.5)
    x = clustered(n=64)
    model(x)
    assert model.training
    first = model.encode(x)
    assert torch.equal(first, model.encode(x))
    assert model.training and model.encoder.training


def test_quantize_is_straight_through():
    model = small()
    x = clustered(n=32).requires_grad_(True)
    model.quantize(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_dim=0), "in_dim must be a positive integer"),
    (dict(code_dim=-2), "code_dim must be a positive integer"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\)"),
    (dict(hidden_dims=(64, 0)), "hidden_dims must be positive integers"),
    (dict(codebook_size=1), "codebook_size=1 is out of range"),
    (dict(num_levels=30), "num_levels=30 is out of range"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(QuantizationError, match=message):
        small(**kwargs)


def test_bad_input():
    model = small()
    with pytest.raises(QuantizationError, match=r"expected a tensor of shape \[N, 32\], got \(4, 16\)"):
        model(torch.zeros(4, 16))
    x = clustered(n=16)
    x[2, 0] = float("nan")
    with pytest.raises(QuantizationError, match=r"1 of 16 rows contain NaN or Inf \(row indices 2\)"):
        model.encode(x)
