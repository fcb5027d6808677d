"""``SIDTrainer``: phase 1 (the tokenizer, once, then SID export) before RecBole's own training loop (phase 2)."""
from __future__ import annotations

from time import time

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_sid.runs import name_run, run_folder


class SIDTrainer(Trainer):
    """RecBole's Trainer for SID models.

    ``fit`` runs ``model.fit_tokenizer`` (phase 1) when the model has no SIDs yet, exports the SIDs and their quality
    report to the run's own folder, then runs RecBole's loop (phase 2: the head on the frozen SIDs, RecBole's early
    stopping). The SIDs are checked after every phase-2 epoch: if anything changed them, training stops with an
    error. The run's checkpoint (``<checkpoint_dir>/<run>.pth``) holds the head and the SIDs.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        name_run(self, config)
        self.extra_results = {}
        self._frozen = None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if not bool(self.model.tokenizer_fitted):
            start = time()
            self.logger.info(set_color("phase 1", "green") + f": {self.model.tokenizer.name} tokenizer")
            output = self.model.fit_tokenizer(train_data, valid_data, tensorboard=self.tensorboard)
            seconds = time() - start
            self.logger.info(set_color("phase 1", "green") + f" done in {seconds:.1f}s; SIDs frozen")
            self.extra_results.update({"tokenizer_seconds": seconds, "tokenizer_history": output.history,
                                       "tokenizer_summary": output.summary})
            if self.config["sid_export"]:
                self.extra_results.update(self.model.export_sids(output, run_folder(self.config, self.run_name)))
        self._frozen = self._sids()
        self.logger.info(set_color("phase 2", "green") + ": the SID head on the frozen SIDs (RecBole's loop)")
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                           callback_fn=callback_fn)


    def _sids(self) -> list[torch.Tensor]:
        return [b.detach().clone() for name, b in self.model.named_buffers() if name in ("item_codes", "user_codes")]

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self._frozen is not None and not all(torch.equal(a, b) for a, b in zip(self._frozen, self._sids())):
            raise RuntimeError(f"the SIDs of {self.config['model']} changed during phase-2 epoch {epoch_idx}; "
                               f"phase 2 must train the head on frozen SIDs")
        return loss
