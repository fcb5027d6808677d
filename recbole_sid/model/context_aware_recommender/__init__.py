"""recbole_sid.model.context_aware_recommender."""
