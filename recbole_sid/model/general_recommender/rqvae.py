"""RQVAE: TIGER-style RQ-VAE SIDs of the item semantic embeddings; the shared SID head on them."""
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.tokenizers import RQVAETokenizer


class RQVAE(SIDRecommender):
    """Phase 1: an RQ-VAE trained on reconstruction. Phase 2: the shared SID head."""

    tokenizer_class = RQVAETokenizer
