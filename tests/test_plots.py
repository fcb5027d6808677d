"""Leaderboard plots: plot_data equals numbers computed by hand from fake cells; write_plots leaves whole PNGs only."""
import json
import statistics
import sys

import pytest

from recbole_sid import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATASET = "fake"

# RQVAE (tokenizer, top-k): two ok seeds of different lengths. BPR (top-k): one ok seed, one failed seed.
# DeepFM (CTR): two ok seeds. LightGCN: no cells at all (skipped).
RQVAE = {
    2020: {"recall": 0.10, "ndcg": 0.20, "recall_warm": 0.15, "ndcg_warm": 0.25, "recall_cold": 0.01, "ndcg_cold": 0.02, "usage": [1.0, 0.5, 0.25],
           "loss": [10.0, 8.0, 6.0], "valid": [0.1, 0.2, 0.3]},
    2021: {"recall": 0.14, "ndcg": 0.30, "recall_warm": 0.19, "ndcg_warm": 0.31, "recall_cold": 0.03, "ndcg_cold": 0.05, "usage": [0.9, 0.7, 0.35],
           "loss": [12.0, 9.0, 7.0, 6.0, 5.0], "valid": [0.2, 0.3, 0.4, 0.45, 0.5]},
}
BPR = {"recall": 0.12, "ndcg": 0.22, "recall_warm": 0.2, "ndcg_warm": 0.3, "recall_cold": 0.0, "ndcg_cold": 0.0, "loss": [3.0, 2.0, 1.5, 1.0],
       "valid": [0.15, 0.25, 0.3, 0.35]}
DEEPFM = {
    2020: {"auc": (0.70, 0.72, 0.60), "logloss": (0.50, 0.48, 0.60), "loss": [5.0, 4.0], "valid": [0.65, 0.70]},
    2021: {"auc": (0.74, 0.75, 0.64), "logloss": (0.46, 0.45, 0.58), "loss": [5.5, 4.5, 4.0],
           "valid": [0.66, 0.69, 0.71]},
}


def _curves(loss, valid):
    """A cell's ``curves``: epoch keys are strings, as in the JSON the leaderboard writes."""
    return {"train_loss": {str(i): v for i, v in enumerate(loss)},
            "valid_score": {str(i): v for i, v in enumerate(valid)}}


def _topk_cell(model, seed, spec, usage=None):
    """An ok top-k cell (with item ``sid_quality`` when ``usage`` is given)."""
    cell = {"model": model, "dataset": DATASET, "seed": seed, "status": "ok", "config": {"seed": seed},
            "versions": {}, "best_valid_score": 0.9, "best_valid_result": {"recall@10": 0.1, "mrr@10": 0.9},
            "test_result": {"recall@10": spec["recall"], "ndcg@10": spec["ndcg"], "mrr@10": 0.5},
            "test_result_warm": {"recall@10": spec["recall_warm"], "ndcg@10": spec["ndcg_warm"]},
            "test_result_cold": {"recall@10": spec["recall_cold"], "ndcg@10": spec["ndcg_cold"]},
            "curves": _curves(spec["loss"], spec["valid"]), "epochs_run": len(spec["loss"])}
    if usage:
        levels = [{"level": i + 1, "codes_used": int(u * 256), "codebook_size": 256, "usage": u, "perplexity": 9.0}
                  for i, u in enumerate(usage)]
        cell["sid_quality"] = {"items": {"levels": levels, "collision_rate": 0.0, "collision_rate_greedy": 0.1}}
    return cell


def _ctr_cell(seed, spec):
    """An ok DeepFM (CTR) cell."""
    parts = ("test_result", "test_result_warm", "test_result_cold")
    cell = {"model": "DeepFM", "dataset": DATASET, "seed": seed, "status": "ok", "versions": {},
            "config": {"seed": seed, "valid_metric": "AUC"}, "curves": _curves(spec["loss"], spec["valid"])}
    for i, part in enumerate(parts):
        cell[part] = {"auc": spec["auc"][i], "logloss": spec["logloss"][i]}
    return cell


@pytest.fixture
def out(tmp_path):
    """A leaderboard output folder with fake cells for RQVAE, BPR (one failed seed) and DeepFM."""
    cells = tmp_path / DATASET / "cells"
    cells.mkdir(parents=True)
    records = [_topk_cell("RQVAE", seed, spec, spec["usage"]) for seed, spec in RQVAE.items()]
    records += [_topk_cell("BPR", 2020, BPR), _ctr_cell(2020, DEEPFM[2020]), _ctr_cell(2021, DEEPFM[2021])]
    # the failed seed carries numbers that would change every BPR mean if it were not ignored
    records.append({"model": "BPR", "dataset": DATASET, "seed": 2021, "status": "error", "error": "boom",
                    "test_result": {"recall@10": 99.0, "ndcg@10": 99.0},
                    "curves": _curves([99.0] * 6, [99.0] * 6)})
    for record in records:
        (cells / f"{record['model']}-seed{record['seed']}.json").write_text(json.dumps(record))
    return tmp_path


MODELS = ["RQVAE", "LightGCN", "BPR", "DeepFM"]


def _ms(values):
    """Mean and sample std (0 for one value), computed independently of the code under test."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _approx_pairs(pairs):
    """Each pair wrapped in pytest.approx."""
    return [pytest.approx(p) for p in pairs]


def test_plot_data_matches_hand_computed(out):
    data = plots.plot_data(out, DATASET, MODELS)
    assert set(data) == {"metrics_topk", "metrics_ctr", "codebook_usage", "curves_topk", "curves_ctr"}
    assert list(data["metrics_topk"]) == ["RQVAE", "BPR"]  # display order, LightGCN (no cells) skipped
    a, b = RQVAE[2020], RQVAE[2021]
    for key, field in (("recall@10_warm", "recall_warm"), ("ndcg@10_warm", "ndcg_warm"),
                       ("recall@10_cold", "recall_cold"), ("ndcg@10_cold", "ndcg_cold")):
        # bars: mean and the half-width of the 95 % t-interval, t(0.975, 1 df) = 12.706204736174707
        mean, std = _ms([a[field], b[field]])
        assert data["metrics_topk"]["RQVAE"][key] == pytest.approx((mean, 12.706204736174707 * std / 2 ** 0.5))
        assert data["metrics_topk"]["BPR"][key] == (pytest.approx(BPR[field]), None)  # error cell ignored; one seed: no CI
    assert set(data["metrics_topk"]["RQVAE"]) == {"recall@10_warm", "ndcg@10_warm", "recall@10_cold", "ndcg@10_cold"}

    ctr = data["metrics_ctr"]["DeepFM"]
    for i, part in enumerate(("", "_warm", "_cold")):
        for metric in ("auc", "logloss"):
            mean, std = _ms([DEEPFM[s][metric][i] for s in DEEPFM])
            assert ctr[f"{metric}{part}"] == pytest.approx((mean, 12.706204736174707 * std / 2 ** 0.5))

    assert list(data["codebook_usage"]) == ["RQVAE"]  # only the tokenizer model has sid_quality
    assert data["codebook_usage"]["RQVAE"] == _approx_pairs([_ms([a["usage"][i], b["usage"][i]]) for i in range(3)])

    rq = data["curves_topk"]["RQVAE"]
    # epochs 0-2: both seeds; epochs 3-4: only the seed that trained longer
    assert rq["train_loss"] == _approx_pairs([(0, 11.0), (1, 8.5), (2, 6.5), (3, 6.0), (4, 5.0)])
    assert rq["valid_score"] == _approx_pairs([(0, 0.15), (1, 0.25), (2, 0.35), (3, 0.45), (4, 0.5)])
    assert rq["valid_metric"] == "mrr@10"  # inferred: the best valid result equal to best_valid_score
    bpr = data["curves_topk"]["BPR"]
    assert bpr["train_loss"] == _approx_pairs(list(enumerate(BPR["loss"])))  # the failed seed's 6 epochs ignored
    assert bpr["valid_score"] == _approx_pairs(list(enumerate(BPR["valid"])))
    fm = data["curves_ctr"]["DeepFM"]
    assert fm["train_loss"] == _approx_pairs([(0, 5.25), (1, 4.25), (2, 4.0)])
    assert fm["valid_score"] == _approx_pairs([(0, 0.655), (1, 0.695), (2, 0.71)])
    assert fm["valid_metric"] == "auc"  # from the config
    assert "DeepFM" not in data["curves_topk"] and "RQVAE" not in data["curves_ctr"]


def test_write_plots_writes_whole_pngs(out):
    pytest.importorskip("matplotlib")
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    written = plots.write_plots(out, DATASET, MODELS)
    folder = out / DATASET / "plots"
    names = ["metrics_topk.png", "metrics_ctr.png", "codebook_usage.png", "curves_topk.png", "curves_ctr.png"]
    assert written == [folder / name for name in names]  # both tasks: separate curve plots
    for path in written:
        head = path.read_bytes()[:8]
        assert head == PNG_SIGNATURE, path
        assert path.stat().st_size > 10_000, path
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary files left behind
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules  # object API only: the user's backend is untouched


def test_single_task_writes_curves_png(out):
    pytest.importorskip("matplotlib")
    written = plots.write_plots(out, DATASET, ["BPR", "LightGCN"])
    folder = out / DATASET / "plots"
    assert written == [folder / "metrics_topk.png", folder / "curves.png"]  # no tokenizer: no codebook plot
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)
    assert plots.write_plots(out, DATASET, ["LightGCN"]) == []  # nothing to draw


def test_missing_matplotlib_is_a_clear_error(out, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"matplotlib.*pip install 'recbole-sid\[plot\]'") as info:
        plots.write_plots(out, DATASET, MODELS)
    assert isinstance(info.value, plots.PlotDependencyError)
    assert not (out / DATASET / "plots").exists()
    assert plots.plot_data(out, DATASET, MODELS)["metrics_topk"]  # the numbers do not need matplotlib
