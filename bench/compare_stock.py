"""By-hand check: the plugin's runner gives the same metrics as stock RecBole's ``run_recbole``.

Stock RecBole 1.2.1 only runs on an older stack (numpy < 2, scipy < 1.13, setuptools < 81 for ray), and with
torch >= 2.6 only with ``saved=False`` (its checkpoint reload fails there). Run in such an environment:

    python bench/compare_stock.py BPR LightGCN DeepFM

Prints one line per model and runner, and exits 1 if any metric differs.
"""
import json
import sys

CONFIG = {"epochs": 2, "show_progress": False}


def main(models):
    from recbole.quick_start import run_recbole as stock_run  # imports ray: needs the old stack

    from recbole_sid.quick_start import run_recbole as plugin_run

    differ = False
    for model in models:
        stock = stock_run(model=model, dataset="ml-100k", config_dict=dict(CONFIG), saved=False)["test_result"]
        ours = plugin_run(model=model, dataset="ml-100k", config_dict=dict(CONFIG), saved=False,
                          cmd_args=[])["test_result"]
        stock = {k: float(v) for k, v in stock.items()}
        ours = {k: float(v) for k, v in ours.items()}
        print("stock ", model, json.dumps(stock))
        print("plugin", model, json.dumps(ours))
        differ |= stock != ours
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["BPR", "LightGCN", "DeepFM"]))
