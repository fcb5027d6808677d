"""recbole_sid.model.general_recommender."""
