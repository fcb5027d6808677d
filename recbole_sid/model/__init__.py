"""Plugin models, laid out like RecBole's: one file per model under ``*_recommender/``, named after it."""
