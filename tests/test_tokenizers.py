"""Every SID model in two phases: tokenizer -> frozen SIDs -> the one shared SID head. SID export, quality report,
cold-item scoring, head options, standalone tokenizing, one run = its own files."""
import json
import subprocess

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from conftest import PYTHON, SID_MODELS, TINY_SID_CONFIG, cli_env, write_tiny_dataset
from dataset_prep.cold_split import cold_split
from recbole_sid.atomic_io import read_sids
from recbole_sid.config import Config
from recbole_sid.data.cold import read_cold_items
from recbole_sid.evaluation import warm_cold_loaders
from recbole_sid.model.layers import SIDHead
from recbole_sid.quick_start import run_recbole
from recbole_sid.tokenize import main as tokenize_main
from recbole_sid.trainer import SIDTrainer


@pytest.fixture(scope="module")
def cold_root(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("tok"), n_users=80, n_items=60)
    cold_split("tiny", root, cold_ratio=0.2, seed=1, log=lambda *a: None)
    return root


def cold_config(root, **extra):
    return dict(TINY_SID_CONFIG, data_path=str(root), benchmark_filename=["train", "valid", "test"], **extra)


def build(root, model, **extra):
    config = Config(model, "tiny", config_dict=cold_config(root, **extra), cmd_args=[])
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], True)
    return config, dataset, train, valid, config.model_class(config, train._dataset)


@pytest.mark.parametrize("model", SID_MODELS)
def test_tokenizer_runs_exports_and_reports(model, cold_root, tmp_path):
    result = run_recbole(model=model, dataset="tiny", config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path)),
                         cmd_args=[])
    for key in ("test_result", "test_result_warm", "test_result_cold"):
        assert "recall@10" in result[key], key
    files = result["sid_files"]
    ids, codes = read_sids(files["itemsid"])
    assert len(ids) == 60 and codes.shape[1] == TINY_SID_CONFIG["sid_levels"] + 1
    assert len({tuple(c) for c in codes}) == len(ids)  # the dedup level makes every SID unique
    assert codes[:, :-1].max() < TINY_SID_CONFIG["sid_codebook_size"]
    report = json.loads(open(files["quality"]).read())
    items = report["items"]
    assert items["n_items"] == 60 and items["collision_rate_after_dedup"] == 0.0
    assert 0.0 <= items["collision_rate"] < 1.0 and items["dedup_size"] == items["largest_bucket"]
    assert len(items["levels"]) == TINY_SID_CONFIG["sid_levels"]
    assert items["recon_mse"] is not None and items["neighbor_overlap"] is not None
    # the SID files of a run sit in a folder named like its checkpoint
    assert files["itemsid"].startswith(result["model_file"][:-len(".pth")] + "/")
    assert result["tokenizer_seconds"] >= 0 and result["tokenizer_history"]
    if model == "DAS":
        uids, _ = read_sids(files["usersid"])
        assert len(uids) == 80 and "users" in report


def test_one_head_for_every_sid_model(cold_root):
    """The head is the same class with the same number of parameters for every tokenizer, and it is all that phase 2
    trains (a leaderboard row differs from another only by its tokenizer)."""
    shapes = {}
    for model_name in SID_MODELS:
        for use_id in (False, True):
            _, _, _, _, model = build(cold_root, model_name, sid_head_id=use_id)
            assert type(model.head) is SIDHead
            assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"head"}
            shapes[(model_name, use_id)] = sum(p.numel() for p in model.parameters())
    for use_id in (False, True):
        counts = {shapes[(m, use_id)] for m in SID_MODELS}
        assert len(counts) == 1, {m: shapes[(m, use_id)] for m in SID_MODELS}
    assert shapes[("DAS", True)] > shapes[("DAS", False)]  # the +id hybrid adds the item-ID table


@pytest.mark.parametrize("model_name", ["DAS", "LETTER"])
def test_sids_identical_before_and_after_every_phase2_epoch(model_name, cold_root, tmp_path, monkeypatch):
    seen = []
    original = SIDTrainer._train_epoch

    def spy(self, *args, **kwargs):
        before = self.model.item_codes.clone()
        out = original(self, *args, **kwargs)
        seen.append((before, self.model.item_codes.clone(), getattr(self.model, "user_codes", None)))
        return out

    monkeypatch.setattr(SIDTrainer, "_train_epoch", spy)
    run_recbole(model=model_name, dataset="tiny", cmd_args=[],
                config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path), epochs=3, stopping_step=10))
    assert len(seen) == 3
    first = seen[0][0]
    assert bool((first[1:] != 0).any())  # phase 1 made SIDs before the first phase-2 epoch
    for before, after, _ in seen:
        assert torch.equal(before, after) and torch.equal(after, first)


def test_trainer_refuses_sids_that_move_in_phase2(cold_root, tmp_path, monkeypatch):
    from recbole_sid.model.abstract_recommender import SIDRecommender

    original = SIDRecommender.calculate_loss

    def moving(self, interaction):
        self.item_codes[1:, -1] = (self.item_codes[1:, -1] + 1) % self.codebook_size  # a per-step refresh
        return original(self, interaction)

    monkeypatch.setattr(SIDRecommender, "calculate_loss", moving)
    with pytest.raises(RuntimeError, match="changed during phase-2 epoch"):
        run_recbole(model="RQKMeans", dataset="tiny", config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path)),
                    cmd_args=[])


def test_item_id_head_is_for_warm_items_only(cold_root):
    config, dataset, train, _, model = build(cold_root, "RQKMeans", sid_head_id=True)
    model.fit_tokenizer(train)
    cold = [dataset.field2token_id["item_id"][i] for i in read_cold_items(cold_root / "tiny" / "tiny.cold_items")]
    trained = sorted(set(train._dataset.inter_feat["item_id"].tolist()))
    assert not set(cold) & set(trained) and bool(model.head.warm[trained].all()) and not bool(model.head.warm[cold].any())
    items = torch.tensor(cold + trained[:5])
    before = model.item_vectors(items).detach().clone()
    with torch.no_grad():
        model.head.item_id_emb.weight.add_(1.0)
    after = model.item_vectors(items)
    assert torch.allclose(after[: len(cold)], before[: len(cold)])  # a cold item: its SID part alone
    assert not torch.allclose(after[len(cold):], before[len(cold):])  # a warm item: SID part + its ID embedding


def test_item_id_dropout_in_training_only(cold_root):
    _, _, train, _, model = build(cold_root, "RQKMeans", sid_head_id=True, sid_head_id_dropout=0.5)
    model.fit_tokenizer(train)
    with torch.no_grad():
        model.head.item_id_emb.weight.fill_(1.0)
    warm = torch.nonzero(model.head.warm).flatten()[:200].repeat(20)
    sid_part = model.head.code_vectors(model.item_codes[warm])
    model.train()
    with_id = (model.item_vectors(warm) - sid_part).abs().sum(-1) > 0
    assert 0.35 < with_id.float().mean() < 0.65  # about half the warm rows keep their ID embedding
    model.eval()
    assert bool(((model.item_vectors(warm) - sid_part).abs().sum(-1) > 0).all())  # evaluation: never dropped
    with pytest.raises(Exception, match="sid_head_id_dropout"):
        build(cold_root, "RQKMeans", sid_head_id=True, sid_head_id_dropout=1.0)


def test_head_init_from_codebooks(cold_root):
    _, _, train, _, random_model = build(cold_root, "RQKMeans", sid_head_init="random")
    random_model.fit_tokenizer(train)
    _, _, train, _, model = build(cold_root, "RQKMeans")  # the default
    output = model.fit_tokenizer(train)
    table = model.head.code_emb.weight.detach().numpy()
    stacked = np.concatenate(output.items.codebooks)  # [L*K, D]: RQ-KMeans codebooks live in the semantic space
    assert table.shape[0] == stacked.shape[0]
    # one linear map for every code: the table's Gram matrix is the codebooks' Gram matrix, scaled
    gram, gram_cb = table @ table.T, stacked @ stacked.T
    ratio = gram.sum() / gram_cb.sum()
    assert np.allclose(gram, ratio * gram_cb, atol=1e-4 * abs(gram).max())
    assert not np.allclose(random_model.head.code_emb.weight.detach().numpy(), table)


def test_cold_items_get_real_scores(cold_root):
    """An item never seen in training is scored from its SID codes, like any other item."""
    _, dataset, train, _, model = build(cold_root, "RQKMeans")
    model.fit_tokenizer(train)
    cold = [dataset.field2token_id["item_id"][i] for i in read_cold_items(cold_root / "tiny" / "tiny.cold_items")]
    trained_items = set(train._dataset.inter_feat["item_id"].tolist())
    users = torch.arange(1, 6)
    scores = model.full_sort_predict({"user_id": users}).view(len(users), -1)
    manual = model.head.user_vectors(users) @ model.head.code_vectors(model.item_codes).T
    assert torch.allclose(scores, manual)
    cold_scores = scores[:, cold]
    assert torch.isfinite(cold_scores).all() and cold_scores.std() > 0
    codes = model.item_codes
    for c in cold:  # a cold item sharing all codes with a warm item gets exactly its score: the SID decides
        twins = [i for i in trained_items if torch.equal(codes[i], codes[c])]
        if twins:
            assert torch.allclose(scores[:, c], scores[:, twins[0]])


def test_warm_cold_loaders_split_test_rows(cold_root):
    config = Config("BPR", "tiny", config_dict=cold_config(cold_root), cmd_args=[])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    loaders = warm_cold_loaders(config, dataset, test, train)
    cold = {dataset.field2token_id["item_id"][i] for i in read_cold_items(cold_root / "tiny" / "tiny.cold_items")}
    test_items = test._dataset.inter_feat["item_id"].tolist()
    cold_rows = loaders["cold"]._dataset.inter_feat["item_id"].tolist()
    warm_rows = loaders["warm"]._dataset.inter_feat["item_id"].tolist()
    assert set(cold_rows) <= cold and not set(warm_rows) & cold
    assert len(cold_rows) + len(warm_rows) == len(test_items) and cold_rows
    for uid in loaders["cold"].uid_list.tolist():
        positives = set(loaders["cold"].uid2positive_item[uid].tolist())
        assert positives <= cold and positives


def test_baseline_gets_warm_cold_breakdown(cold_root, in_tmp):
    result = run_recbole(model="BPR", dataset="tiny", config_dict=cold_config(cold_root), cmd_args=[], saved=False)
    assert result["test_result_cold"]["recall@10"] >= 0 and result["test_rows_cold"] > 0


def test_no_cold_breakdown_when_the_split_is_not_cold(cold_root, in_tmp, caplog):
    """A .cold_items file beside the data but a random split (no benchmark_filename): the listed items are in
    training, so "cold" metrics would be wrong. Say so, and report none."""
    cfg = dict(TINY_SID_CONFIG, data_path=str(cold_root))  # tiny.inter is there too: RecBole splits it randomly
    with caplog.at_level("WARNING"):
        result = run_recbole(model="BPR", dataset="tiny", config_dict=cfg, cmd_args=[], saved=False)
    assert "test_result_cold" not in result and "test_result_warm" not in result
    assert "not cold here" in caplog.text and "tiny.cold_items" in caplog.text


def test_identical_sids_are_warned_about(tmp_path, caplog):
    """Items whose text is identical get identical SIDs even after the collision-aware last level when a group is
    larger than the last codebook: the export says how many, the largest group and what to change."""
    root = write_tiny_dataset(tmp_path, n_users=40, n_items=48)
    item_file = root / "tiny" / "tiny.item"
    lines = item_file.read_text().splitlines()
    item_file.write_text("\n".join([lines[0]] + [f"{line.split(chr(9))[0]}\tsame words for all\tsame"
                                                 for line in lines[1:]]) + "\n")
    with caplog.at_level("WARNING"):
        result = run_recbole(model="RQKMeans", dataset="tiny", cmd_args=[],
                             config_dict=dict(TINY_SID_CONFIG, data_path=str(root), checkpoint_dir=str(tmp_path / "s")))
    assert "48 of 48 items (100.0%) share their full SID" in caplog.text
    assert "larger than a codebook" in caplog.text and "sid_head_id" in caplog.text
    assert result["sid_quality"]["items"]["identical_sids"] == {"sharing": 48, "largest_bucket": 48}


def test_runs_at_once_write_their_own_files(cold_root, tmp_path):
    """Two runs started together with one checkpoint_dir (seeds 1 and 2): each writes and reloads its own
    checkpoint and SID files, and reports its own metrics."""
    script = ("import json, sys; from recbole_sid.quick_start import run_recbole; "
              "r = run_recbole(model='RQKMeans', dataset='tiny', cmd_args=[], config_dict=json.loads(sys.argv[1])); "
              "print(json.dumps({'model_file': r['model_file'], 'sid_files': r['sid_files'], "
              "'test': {k: float(v) for k, v in r['test_result'].items()}}))")
    procs = []
    for seed in (1, 2):
        cfg = cold_config(cold_root, checkpoint_dir=str(tmp_path / "csaved"), seed=seed, epochs=3)
        procs.append(subprocess.Popen([PYTHON, "-c", script, json.dumps(cfg)], cwd=tmp_path, env=cli_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0]["model_file"] != outs[1]["model_file"]
    assert outs[0]["sid_files"]["itemsid"] != outs[1]["sid_files"]["itemsid"]
    sids = [read_sids(o["sid_files"]["itemsid"])[1] for o in outs]
    assert not np.array_equal(sids[0], sids[1])  # seed 1's SIDs survive beside seed 2's
    for seed, out in zip((1, 2), outs):  # each checkpoint is its own seed's run
        checkpoint = torch.load(out["model_file"], map_location="cpu", weights_only=False)  # our test's own file
        assert checkpoint["config"]["seed"] == seed


def test_sequential_runs_never_leave_a_mismatched_pair(cold_root, tmp_path):
    first = run_recbole(model="DAS", dataset="tiny", config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path)),
                        cmd_args=[])
    second = run_recbole(model="RQKMeans", dataset="tiny",
                         config_dict=cold_config(cold_root, checkpoint_dir=str(tmp_path)), cmd_args=[])
    assert "usersid" in first["sid_files"] and "usersid" not in second["sid_files"]
    folder = lambda r: r["sid_files"]["itemsid"].rsplit("/", 1)[0]  # noqa: E731
    assert folder(first) != folder(second)
    assert read_sids(first["sid_files"]["itemsid"])[1].shape == read_sids(second["sid_files"]["itemsid"])[1].shape


@pytest.mark.parametrize("model", SID_MODELS)
def test_tokenize_writes_sids_for_every_tokenizer(model, cold_root, tmp_path, capsys):
    out = tmp_path / "sids"
    overrides = [f"--{k}={v!r}" if isinstance(v, str) else f"--{k}={v}" for k, v in TINY_SID_CONFIG.items()]
    argv = ["--model", model, "--dataset", "tiny", "--data-path", str(cold_root), "--out", str(out),
            "--benchmark_filename=['train','valid','test']", f"--checkpoint_dir={tmp_path / 'ck'}", *overrides]
    assert tokenize_main(argv) == 0
    ids, codes = read_sids(out / "tiny.itemsid")
    assert len(ids) == 60 and codes.shape[1] == TINY_SID_CONFIG["sid_levels"] + 1
    assert (out / f"tiny-{model}.sid_quality.json").is_file()
    assert (out / "tiny.usersid").is_file() == (model == "DAS")
    assert not (tmp_path / "ck").exists() or not list((tmp_path / "ck").glob("*.pth"))  # no head was trained
    assert tokenize_main(argv) == 2  # the outputs exist: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert tokenize_main(argv + ["--overwrite"]) == 0


def test_tokenize_default_location_is_per_run(cold_root, tmp_path):
    written = []
    for seed in (1, 2):
        argv = [PYTHON, "-m", "recbole_sid.tokenize", "--model", "RQKMeans", "--dataset", "tiny", "--data-path",
                str(cold_root), f"--seed={seed}", "--sid_levels=2", "--sid_codebook_size=8", "--semantic_dim=16",
                f"--checkpoint_dir={tmp_path / 'saved'}"]
        proc = subprocess.run(argv, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        written.append(dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines()))
    assert written[0]["itemsid"] != written[1]["itemsid"]
    assert all(str(tmp_path / "saved") in w["itemsid"] for w in written)


def test_tokenize_refuses_a_model_without_tokenizer(cold_root, tmp_path, capsys):
    assert tokenize_main(["--model", "BPR", "--dataset", "tiny", "--data-path", str(cold_root)]) == 2
    assert "not a SID model" in capsys.readouterr().err


def test_old_names_are_aliases(cold_root):
    for old, new in (("QuantAlign", "LETTER"), ("AlignQuant", "QARM")):
        config = Config(old, "tiny", config_dict=cold_config(cold_root), cmd_args=[])
        assert config["model"] == new and config.model_class.__name__ == new
        assert any(old in notice for notice in config.notices)


def test_letter_codes_differ_from_rqvae_codes_on_ml100k(in_tmp):
    """Same seed, same RQ-VAE and training keys: LETTER's collaborative and diversity terms change the codes."""
    cfg = {"tokenizer_epochs": 10, "cf_epochs": 3, "semantic_cache_dir": str(in_tmp / "cache"), "sid_export": False}
    codes = {}
    for model in ("RQVAE", "LETTER"):
        config = Config(model, "ml-100k", config_dict=dict(cfg), cmd_args=[])
        init_seed(config["seed"], True)
        dataset = create_dataset(config)
        train, valid, _ = data_preparation(config, dataset)
        init_seed(config["seed"], True)
        codes[model] = config.model_class(config, train._dataset).fit_tokenizer(train, valid).items.codes
    differ = (codes["RQVAE"] != codes["LETTER"]).any(axis=1).mean()
    assert differ > 0.2, differ


@pytest.mark.parametrize("model", SID_MODELS)
def test_cli_on_ml100k(model, in_tmp):
    """`run_recbole --model=<tokenizer> --dataset=ml-100k` works with the embedded data and default encoder."""
    fast = ["--epochs=1", "--tokenizer_epochs=2", "--cf_epochs=1", "--adapter_epochs=1", "--show_progress=False",
            "--das_rqvae_pretrain_epochs=1", "--das_icdm_pretrain_epochs=1", "--das_joint_epochs=1",
            f"--semantic_cache_dir={in_tmp / 'cache'}"]
    out = subprocess.run([PYTHON, "-m", "recbole_sid", f"--model={model}", "--dataset=ml-100k", *fast], cwd=in_tmp,
                         env=cli_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test result" in out.stdout
    (itemsid,) = (in_tmp / "saved").glob(f"{model}-*/ml-100k.itemsid")
    ids, codes = read_sids(itemsid)
    assert len(ids) == 1682 and len({tuple(c) for c in codes}) == 1682
    assert "semantic embeddings" in out.stderr.lower()  # the default encoder's build is logged
    assert "phase 1" in out.stderr and "phase 2" in out.stderr
    quality = json.loads((itemsid.parent / f"ml-100k-{model}.sid_quality.json").read_text())
    assert np.isfinite(quality["items"]["collision_rate"])
