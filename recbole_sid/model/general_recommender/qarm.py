"""QARM (Kuaishou): align semantic embeddings to collaborative ones with a contrastive adapter, then quantize; the
shared SID head on the SIDs. ``AlignQuant`` is an alias of this model."""
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.tokenizers import QARMTokenizer


class QARM(SIDRecommender):
    """Phase 1: CF model, contrastive adapter, residual quantization. Phase 2: the shared SID head."""

    tokenizer_class = QARMTokenizer
