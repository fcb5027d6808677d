"""LETTER (arXiv 2405.07314): RQ-VAE SIDs regularised toward collaborative embeddings and diverse code use; the
shared SID head on them. ``QuantAlign`` is an alias of this model."""
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.tokenizers import LETTERTokenizer


class LETTER(SIDRecommender):
    """Phase 1: CF model, then an RQ-VAE with L_sem + alpha * L_CF + beta * L_div. Phase 2: the shared SID head."""

    tokenizer_class = LETTERTokenizer
