"""Plugin trainers: ``<Model>Trainer`` classes here are picked up by ``recbole_sid.get_trainer``."""
from recbole_sid.trainer.sid_trainer import SIDTrainer

# RecBole convention: get_trainer looks for "<Model>Trainer"; every SID model uses SIDTrainer.
RQKMeansTrainer = SIDTrainer
RQVAETrainer = SIDTrainer
QuantAlignTrainer = SIDTrainer
AlignQuantTrainer = SIDTrainer
DASTrainer = SIDTrainer

__all__ = ["SIDTrainer", "RQKMeansTrainer", "RQVAETrainer", "QuantAlignTrainer", "AlignQuantTrainer", "DASTrainer"]
