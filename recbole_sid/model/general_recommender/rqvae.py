"""RQVAE: TIGER-style RQ-VAE semantic IDs trained on item semantic embeddings (stage 1), then frozen."""
import numpy as np
import torch

from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.model.stages import fit_rqvae
from recbole_sid.quantization import RQVAE as RQVAEModule


def build_rqvae(config, in_dim: int, num_levels: int, codebook_size: int, seed: int) -> RQVAEModule:
    """An RQ-VAE module from the model yaml keys (rqvae_*, sid_code_dim, dead_code_threshold, kmeans_iters)."""
    return RQVAEModule(
        in_dim=in_dim, hidden_dims=list(config["rqvae_hidden_dims"]), code_dim=int(config["sid_code_dim"]),
        num_levels=num_levels, codebook_size=codebook_size, beta=float(config["rqvae_beta"]),
        dropout=float(config["rqvae_dropout"]), kmeans_init=True, seed=seed,
        dead_code_threshold=int(config["dead_code_threshold"]), kmeans_iters=int(config["kmeans_iters"]),
        use_gpu=config["faiss_use_gpu"],
    )


@torch.no_grad()
def rqvae_codes(model: SIDRecommender, rqvae: RQVAEModule, x: torch.Tensor, side: str = "item") -> np.ndarray:
    """SIDs of ``x`` from a trained RQ-VAE: greedy codes of its latent, then the model's last-level rule."""
    rqvae.eval()
    latent = rqvae.encoder(x)
    codes = rqvae.quantizer.encode(latent)
    return model.finalize_codes(latent, [cb.weight for cb in rqvae.quantizer.codebooks], codes, side=side)


class RQVAE(SIDRecommender):
    """Stage 1 trains an RQ-VAE on the items' semantic embeddings; its codes are then frozen as item SIDs."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.tokenizer_epochs = int(config["tokenizer_epochs"])
        self.tokenizer_lr = float(config["tokenizer_lr"])
        self.tokenizer_batch_size = int(config["tokenizer_batch_size"])
        self.rqvae = build_rqvae(config, self.item_sem.shape[1], self.sid_levels, self.codebook_size, self.seed)

    def fit_tokenizer(self, train_data) -> None:
        x = self.real_item_embeddings()
        fit_rqvae(self.rqvae, x, self.tokenizer_epochs, self.tokenizer_lr, self.tokenizer_batch_size, self.seed)
        self.set_item_codes(rqvae_codes(self, self.rqvae, x))

    @torch.no_grad()
    def item_reconstructions(self):
        return self.rqvae.decode(self.item_codes[1:]).cpu().numpy().astype(np.float32)
