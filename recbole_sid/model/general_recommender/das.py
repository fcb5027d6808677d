"""DAS (arXiv 2508.10584): one-stage Dual-Aligned Semantic IDs for users and items; the shared SID head on them.

Phase 1 is the paper's method (``recbole_sid.tokenizers.das``: UISM + ICDM + MDAM, warm starts, then joint
training with its own stopping rule); it writes user and item SIDs. Phase 2 trains the head every SID model shares
on the frozen item SIDs, in RecBole's loop.
"""
from recbole_sid.model.abstract_recommender import SIDRecommender
from recbole_sid.tokenizers import DASTokenizer


class DAS(SIDRecommender):
    """Phase 1: DAS's one-stage tokenizer (user and item SIDs). Phase 2: the shared SID head."""

    tokenizer_class = DASTokenizer
