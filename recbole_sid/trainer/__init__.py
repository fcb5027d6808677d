"""Plugin trainers: ``<Model>Trainer`` classes here are picked up by ``recbole_sid.get_trainer``."""
