"""``SIDTrainer``: RecBole's Trainer with the tokenizer stages before the loop and SID export after it."""
from __future__ import annotations

import os
from time import time

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color


class SIDTrainer(Trainer):
    """Runs ``model.fit_tokenizer`` (stage 1 of two-stage tokenizers) once, RecBole's training loop, then
    reloads the best checkpoint and exports SIDs + their quality report (``extra_results``)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.extra_results = {}

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if not bool(self.model.tokenizer_fitted):
            start = time()
            self.model.fit_tokenizer(train_data)
            self.logger.info(set_color("tokenizer stage(s)", "green") + f" done in {time() - start:.1f}s")
            self.extra_results["tokenizer_seconds"] = time() - start
        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=callback_fn)
        if saved and os.path.isfile(self.saved_model_file):
            # Our own checkpoint, written by this trainer moments ago (it pickles the Config): weights_only=False.
            checkpoint = torch.load(self.saved_model_file, map_location=self.device, weights_only=False)
            self.model.load_state_dict(checkpoint["state_dict"])
        if self.model.sid_export:
            self.extra_results.update(self.model.export_sids())
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        hook = getattr(self.model, "on_train_epoch_end", None)
        if hook is not None:
            hook()
        return loss
