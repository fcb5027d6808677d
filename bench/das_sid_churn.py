"""How much DAS's SIDs move between epochs, and what that does to the validation curve.

    OMP_NUM_THREADS=1 python bench/das_sid_churn.py --data-path dataset --dataset ml-100k \
        [--set das_sid_freeze_epoch=20 beta=1.0 ...] [--epochs 50] [--stopping-step 5] [--seed 2020]

DAS refreshes every item's and user's SID from its quantizers after each epoch (``DAS.refresh_codes``). This
script wraps that method to count, at each refresh, the share of items whose level-1 code changed, of items
whose SID changed at any level, and of users whose SID changed at any level; it prints those per epoch with the
validation curve and the test Recall@10 on all and on cold items (the dataset should have a cold split).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default="dataset")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="DAS config overrides")
    parser.add_argument("--checkpoint-dir", default="saved/das_sid_churn")
    args = parser.parse_args(argv)

    from recbole_sid.leaderboard import dataset_config, parse_set
    from recbole_sid.model.general_recommender.das import DAS
    from recbole_sid.quick_start import run_recbole

    churn = []
    refresh = DAS.refresh_codes

    def counted_refresh(self):
        items, users = self.item_codes[1:].clone(), self.user_codes[1:].clone()
        refresh(self)
        if items.abs().sum() > 0:  # the first call only initialises the codes
            churn.append({"items_level1": (items[:, 0] != self.item_codes[1:, 0]).float().mean().item(),
                          "items_any": (items != self.item_codes[1:]).any(1).float().mean().item(),
                          "users_any": (users != self.user_codes[1:]).any(1).float().mean().item()})

    DAS.refresh_codes = counted_refresh
    config = dataset_config(args.dataset, args.data_path)
    config.update({"epochs": args.epochs, "stopping_step": args.stopping_step, "seed": args.seed,
                   "show_progress": False, "eval_batch_size": 1000000, "sid_export": False,
                   "checkpoint_dir": args.checkpoint_dir})
    config.update(parse_set(args.set))
    result = run_recbole(model="DAS", dataset=args.dataset, config_dict=config, cmd_args=[])
    valid = [round(v, 4) for v in result["curves"]["valid_score"].values()]
    print("epoch | items: level-1 code changed | items: any level changed | users: any level changed | valid")
    for epoch, score in enumerate(valid):
        c = churn[epoch] if epoch < len(churn) else None
        cells = " | ".join(f"{c[k]:.3f}" for k in ("items_level1", "items_any", "users_any")) if c else "- | - | -"
        print(f"{epoch} | {cells} | {score}")
    summary = {"overrides": parse_set(args.set), "seed": args.seed, "epochs_run": len(valid),
               "best_valid": result["best_valid_score"], "test_recall@10": result["test_result"]["recall@10"],
               "test_recall@10_cold": (result.get("test_result_cold") or {}).get("recall@10")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
