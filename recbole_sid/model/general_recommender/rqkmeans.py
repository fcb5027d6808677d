"""RQKMeans: SIDs from greedy residual k-means (faiss) of the item semantic embeddings; the shared SID head on them."""
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.tokenizers import RQKMeansTokenizer


class RQKMeans(SIDRecommender):
    """Phase 1: residual k-means, no training. Phase 2: the shared SID head."""

    tokenizer_class = RQKMeansTokenizer
