"""DAS phase 1, epoch by epoch: SID churn, the stopping score, every loss term's share, and which terms move the
codes (gradient norms on the quantizers' encoders).

    OMP_NUM_THREADS=1 python bench/das_sid_churn.py --data-path dataset --dataset ml-100k \
        [--set das_joint_epochs=30 beta=1.0 ...] [--seed 2020] [--out results/das_phase1_ml-100k.md]

Runs DAS's tokenizer alone (``python -m recbole_sid.tokenize`` does the same, without this instrumentation). After
the warm starts and before each joint epoch, one fixed batch of training pairs gives every loss term's gradient
norm on the item and the user encoder (a term that does not reach an encoder cannot move its codes). Churn: share
of items (users) whose SID changed at any level / at level l since the previous joint epoch (greedy codes).
Writes a markdown report (``--out``) and prints it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def grad_norms(tok, batch) -> dict:
    """{term: (|grad| on the item encoder, |grad| on the user encoder)} for one batch."""
    import torch

    tok.train(True)
    state = tok.generator.get_state()
    terms = tok.loss_terms(*batch)
    tok.generator.set_state(state)  # the measurement must not change the training's random stream
    encoders = {"item": list(tok.uism.item_rqvae.encoder.parameters()),
                "user": list(tok.uism.user_rqvae.encoder.parameters())}
    out = {}
    for name, value in terms.items():
        norms = []
        for params in encoders.values():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norms.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None) or torch.tensor(0.0))))
        out[name] = tuple(norms)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default="dataset")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="DAS config overrides")
    parser.add_argument("--out", default=None, help="markdown report (default results/das_phase1_<dataset>.md)")
    args = parser.parse_args(argv)

    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_sid.config import Config
    from recbole_sid.leaderboard import dataset_config, parse_set
    from recbole_sid.tokenizers.das import DASTokenizer

    overrides = parse_set(args.set)
    cfg = dataset_config(args.dataset, args.data_path)
    cfg.update({"seed": args.seed, "show_progress": False, "checkpoint_dir": "saved/das_sid_churn"}, **overrides)
    config = Config("DAS", args.dataset, config_dict=cfg, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = config.model_class(config, train._dataset)

    grads = {}
    epoch_of_joint = [0]
    original = DASTokenizer._epoch

    def instrumented(self, optimizer, terms_fn, batch_size):
        if terms_fn == self.loss_terms:  # a joint epoch: measure first on a fixed batch
            data = self.data
            gen = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(data.train_users), generator=gen)[:self.batch_size]
            neg = torch.randint(1, data.n_items, (len(idx),), generator=gen)
            grads[epoch_of_joint[0]] = grad_norms(self, (data.train_users[idx], data.train_items[idx], neg))
            epoch_of_joint[0] += 1
        return original(self, optimizer, terms_fn, batch_size)

    DASTokenizer._epoch = instrumented
    start = time.perf_counter()
    output = model.fit_tokenizer(train, valid)
    seconds = time.perf_counter() - start
    joint = [r for r in output.history if r["stage"] == "joint"]
    stages = {}
    for r in output.history:
        stages.setdefault(r["stage"], 0)
        stages[r["stage"]] += 1

    lines = [f"# DAS phase 1 on {args.dataset} (seed {args.seed})", "",
             f"`OMP_NUM_THREADS=1 python bench/das_sid_churn.py --data-path {args.data_path} --dataset {args.dataset}"
             + (f" --set {' '.join(args.set)}" if args.set else "") + f"`: phase 1 took {seconds:.0f} s "
             f"({', '.join(f'{k}: {v} epochs' for k, v in stages.items())}); best joint epoch "
             f"{output.summary['best_joint_epoch']} (valid recall@10 of c_u_int vs decoded item SIDs "
             f"{output.summary['best_valid_recall']:.4f}); reconstruction error of the final SIDs, as a share of the "
             f"embeddings' variance: items {output.summary['recon_item_normalized']:.3f}, users "
             f"{output.summary['recon_user_normalized']:.3f}.", "",
             "## SID churn and the stopping score, per joint epoch", "",
             "Share of entities whose greedy SID changed since the previous epoch (epoch 0 = after the warm starts).", ""]
    levels = sorted(k for k in joint[-1] if k.startswith("churn_l"))
    lines += ["| epoch | items: any level | " + " | ".join(f"items: level {k[-1]}" for k in levels)
              + " | users: any level | valid recall@10 | dead codes re-seeded | s |",
              "|---:|---:|" + "---:|" * len(levels) + "---:|---:|---:|---:|"]
    for r in joint:
        cells = [r.get("churn_any"), *[r.get(k) for k in levels], r.get("user_churn_any")]
        lines.append(f"| {r['epoch']} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells)
                     + f" | {r['valid_recall']:.4f} | {int(r.get('dead_codes_reseeded', 0))} | "
                     f"{r.get('seconds', 0):.1f} |")
    term_keys = [k for k in joint[-1] if k.startswith(("sem_", "cf_", "align_"))]
    lines += ["", "## Loss terms (weighted, mean over the epoch's batches) and their share of the objective", "",
              "| epoch | " + " | ".join(term_keys) + " | total |", "|---:|" + "---:|" * (len(term_keys) + 1)]
    for r in joint[1:]:
        total = sum(r[k] for k in term_keys)
        lines.append(f"| {r['epoch']} | " + " | ".join(f"{r[k]:.3f} ({r[k] / total:.0%})" for k in term_keys)
                     + f" | {total:.3f} |")
    lines += ["", "## Which terms move the codes: gradient norm on the encoders (one fixed batch)", "",
              "Before joint epoch e (e = 0: right after the warm starts). Item encoder / user encoder.", "",
              "| before epoch | " + " | ".join(term_keys) + " |", "|---:|" + "---:|" * len(term_keys)]
    for epoch, norms in sorted(grads.items()):
        if epoch in (0, 1, 2, 5, 10, 20, 30) or epoch == max(grads):
            lines.append(f"| {epoch} | " + " | ".join(f"{norms[k][0]:.3f} / {norms[k][1]:.3f}" if k in norms else "—"
                                                    for k in term_keys) + " |")
    report = "\n".join(lines) + "\n"
    out = Path(args.out or f"results/das_phase1_{args.dataset}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    out.with_suffix(".json").write_text(json.dumps({"history": output.history, "summary": output.summary,
                                                    "grad_norms": {str(k): v for k, v in grads.items()},
                                                    "seconds": seconds, "overrides": overrides}, indent=1))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
