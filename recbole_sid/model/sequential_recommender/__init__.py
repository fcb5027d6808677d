"""recbole_sid.model.sequential_recommender."""
