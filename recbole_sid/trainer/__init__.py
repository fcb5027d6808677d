"""Plugin trainers: ``<Model>Trainer`` classes here are picked up by ``recbole_sid.get_trainer``."""
from recbole_sid.trainer.sid_trainer import SIDTrainer

# RecBole convention: get_trainer looks for "<Model>Trainer". Every SID model uses SIDTrainer (phase 1, then
# RecBole's loop); get_trainer also gives it to any other SIDRecommender subclass (registered third-party models).
RQKMeansTrainer = SIDTrainer
RQVAETrainer = SIDTrainer
LETTERTrainer = SIDTrainer
QARMTrainer = SIDTrainer
DASTrainer = SIDTrainer

__all__ = ["SIDTrainer", "RQKMeansTrainer", "RQVAETrainer", "LETTERTrainer", "QARMTrainer", "DASTrainer"]
