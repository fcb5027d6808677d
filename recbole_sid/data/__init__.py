"""recbole_sid.data: semantic embeddings aligned with RecBole ids, text encoders, cold items."""
from recbole_sid.data.cold import cold_item_mask, read_cold_items
from recbole_sid.data.encoders import TextEncoder, available_encoders, get_encoder
from recbole_sid.data.semantic import item_semantic_embeddings, user_semantic_embeddings

__all__ = ["TextEncoder", "available_encoders", "cold_item_mask", "get_encoder", "item_semantic_embeddings",
           "read_cold_items", "user_semantic_embeddings"]
