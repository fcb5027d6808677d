"""SID quality metrics against hand-computed values, the CLI, and the reference SIDs of DESIGN.md section 5."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_sid.atomic_io import read_sids, write_sids, write_vectors
from recbole_sid.exceptions import DataError
from recbole_sid.quality import (
    SIDQualityReport,
    collision_rate,
    infer_codebook_size,
    largest_bucket,
    level_stats,
    main,
    neighbor_preservation,
    reconstruction_error,
    sid_one_hot,
    sid_quality,
)
from recbole_sid.quantization import add_dedup_level

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the repository, or $RECBOLE_SID_SHARED_DATA
SHARED_DATA = Path(os.environ.get("RECBOLE_SID_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))
REFERENCE = SHARED_DATA / "amazon-scientific" / "reference-sids"

CODES = np.array([[0, 1], [0, 1], [1, 2], [0, 3]])
# level 1: counts [3, 1, 0, 0]; level 2: counts [0, 2, 1, 1]
PPL1 = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
PPL2 = 2 ** 1.5  # entropy 1.5 bits

# e: nearest neighbours 0<->1 and 2<->3
EMB = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)


def test_level_stats_hand_computed():
    s1, s2 = level_stats(CODES, codebook_size=4)
    assert (s1.level, s1.codes_used, s1.codebook_size, s1.usage) == (1, 2, 4, 0.5)
    assert (s2.level, s2.codes_used, s2.usage) == (2, 3, 0.75)
    assert s1.perplexity == pytest.approx(PPL1) and s2.perplexity == pytest.approx(PPL2)
    assert level_stats(np.zeros((5, 1), dtype=int), 8)[0].perplexity == pytest.approx(1.0)
    with pytest.raises(DataError, match="level 2 holds code 3, which does not fit codebook_size=3"):
        level_stats(CODES, codebook_size=3)


def test_collisions_and_buckets_hand_computed():
    assert collision_rate(CODES) == 0.25  # 3 distinct SIDs for 4 items
    assert largest_bucket(CODES) == 2
    assert collision_rate(CODES[:, :1]) == 0.5
    assert largest_bucket(CODES[:, :1]) == 3
    assert collision_rate(np.arange(6).reshape(3, 2)) == 0.0


def test_infer_codebook_size():
    assert [infer_codebook_size(np.array([[m]])) for m in (0, 1, 3, 100, 255, 256)] == [2, 2, 4, 128, 256, 512]


def test_reconstruction_error_hand_computed():
    mse, cos = reconstruction_error(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert mse == pytest.approx(0.5)
    assert cos == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_neighbor_preservation_hand_computed():
    assert neighbor_preservation(EMB, EMB, k=1) == 1.0
    # z neighbours: 0<->1 kept, 2 -> 1 and 3 -> 0 lost
    z = np.array([[1, 0], [1, 0.1], [0, 1], [1, -0.5]])
    assert neighbor_preservation(EMB, z, k=1) == pytest.approx(0.5)
    assert neighbor_preservation(EMB, z, k=3) == pytest.approx(1.0)  # k = N - 1: every other item


def test_neighbor_preservation_ties_count_in_expectation():
    # one-hot SIDs: similarity = share of agreeing levels. With k=1:
    # item 0 ties with 1, 2, 3 (0.5 each) and its e-neighbour 1 is among them -> 1/3
    # item 1 ties with 0, 2 -> its e-neighbour 0 is one of 2 -> 1/2; items 2 and 3 -> 0
    codes = np.array([[0, 0], [0, 1], [0, 2], [1, 0]])
    z = sid_one_hot(codes)
    assert z.shape == (4, 2 + 3)
    assert neighbor_preservation(EMB, z, k=1) == pytest.approx((1 / 3 + 1 / 2) / 4)
    # item order does not matter
    perm = [2, 0, 3, 1]
    assert neighbor_preservation(EMB[perm], z[perm], k=1) == pytest.approx((1 / 3 + 1 / 2) / 4)


def test_sid_quality_report_and_dedup_level():
    codes, _ = add_dedup_level(CODES)
    rep = sid_quality(codes, codebook_size=4, has_dedup_level=True)
    assert isinstance(rep, SIDQualityReport)
    assert (rep.n_items, rep.num_levels, len(rep.levels)) == (4, 2, 2)
    assert rep.collision_rate == 0.25 and rep.collision_rate_after_dedup == 0.0
    assert rep.largest_bucket == 2 and rep.unique_ratio == 0.75 and rep.dedup_level_present
    first = sid_quality(codes, codebook_size=4, has_dedup_level=True, levels=1)
    assert first.collision_rate == 0.5 and first.num_levels == 1
    d = rep.to_dict()
    assert d["levels"][1]["perplexity"] == pytest.approx(PPL2) and json.dumps(d)
    text = rep.format()
    assert "25.00 %" in text and "3 / 4" in text and "after dedup level" in text
    inferred = sid_quality(CODES)
    assert inferred.codebook_size_inferred and inferred.levels[0].codebook_size == 4
    assert "inferred as 2^ceil(log2(max code + 1))" in inferred.format()


def test_sid_quality_with_embeddings():
    rep = sid_quality(np.array([[0, 0], [0, 1], [0, 2], [1, 0]]), embeddings=EMB, k=1)
    assert rep.neighbor_space == "sid-one-hot" and rep.neighbor_overlap == pytest.approx(5 / 24)
    recon = EMB + 0.5
    rep = sid_quality(CODES, embeddings=EMB, reconstructions=recon, k=1)
    assert rep.recon_mse == pytest.approx(0.25) and rep.neighbor_space == "reconstructions"
    assert rep.neighbor_overlap == pytest.approx(neighbor_preservation(EMB, recon, k=1))


@pytest.mark.parametrize("call, message", [
    (lambda: sid_quality(np.array([[0.5, 1.0]])), "expected integer codes"),
    (lambda: sid_quality(np.array([[0, -2]])), "negative codes"),
    (lambda: sid_quality(CODES, levels=3), r"levels=3: the SIDs have 2 learned level\(s\)"),
    (lambda: sid_quality(CODES[:, :1], has_dedup_level=True), "has_dedup_level needs at least 2 levels"),
    (lambda: sid_quality(CODES, embeddings=EMB[:3]), r"embeddings \(3 rows\) and SIDs \(4 items\)"),
    (lambda: neighbor_preservation(EMB, EMB, k=0), "k must be a positive integer"),
])
def test_bad_input(call, message):
    with pytest.raises(DataError, match=message):
        call()


# --- CLI --------------------------------------------------------------------------------------------------------

def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "recbole_sid.quality", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_subprocess_on_itemsid_and_public_json(tmp_path):
    itemsid = write_sids(tmp_path / "toy.itemsid", ["i1", "i2", "i3", "i4"], CODES)
    public = tmp_path / "toy.index.json"
    public.write_text(json.dumps({str(i): [f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"]
                                  for i, (a, b, c) in enumerate(add_dedup_level(CODES)[0])}))
    out = _run(itemsid, public)  # one interpreter start for both files (importing RecBole takes seconds)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split("file: ")[1:]
    assert str(itemsid) in first and str(public) in second
    assert "4 items, 2 learned level(s), codebook size 4 (inferred as 2^ceil(log2(max code + 1)))" in first
    assert "25.00 %" in first and "2 / 4" in first and "3 / 4" in first
    assert f"{PPL1:.2f}" in first and f"{PPL2:.2f}" in first
    assert "4 items, 3 learned level(s)" in second and "0.00 %" in second  # dedup level not declared here


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "toy.index.json"
    path.write_text(json.dumps({str(i): [f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"]
                                for i, (a, b, c) in enumerate(add_dedup_level(CODES)[0])}))
    assert main([str(path), "--json", "--has-dedup-level", "--codebook-size", "8"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["collision_rate"] == 0.25 and rep["collision_rate_after_dedup"] == 0.0
    assert rep["num_levels"] == 2 and rep["levels"][0]["codes_used"] == 2
    assert rep["levels"][0]["codebook_size"] == 8 and rep["codebook_size_inferred"] is False
    assert rep["levels"][0]["perplexity"] == pytest.approx(PPL1) and rep["file"] == str(path)
    assert main([str(path), str(path), "--json", "--levels", "1"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [r["collision_rate"] for r in both] == [0.5, 0.5]


def test_cli_in_process_with_embeddings_and_errors(tmp_path, capsys):
    sids = write_sids(tmp_path / "toy.itemsid", ["a", "b", "c", "d"], np.array([[0, 0], [0, 1], [0, 2], [1, 0]]))
    emb = write_vectors(tmp_path / "toy.itememb", ["d", "c", "b", "a"], EMB[::-1])  # other order: aligned by id
    assert main([str(sids), "--emb", str(emb), "-k", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["neighbor_overlap"] == pytest.approx(5 / 24) and rep["neighbor_k"] == 1
    assert main([str(tmp_path / "missing.itemsid")]) == 2
    assert "file not found" in capsys.readouterr().err
    short = write_vectors(tmp_path / "short.itememb", ["a", "b"], EMB[:2])
    assert main([str(sids), "--emb", str(short)]) == 2
    assert "no vector for 2 of 4 SID ids" in capsys.readouterr().err


# --- the reference SIDs (DESIGN.md section 5) --------------------------------------------------------------------

@pytest.mark.parametrize("name, coll3, coll4, level1_used", [
    ("rqvae", 22.9, 12.8, 32),
    ("letter", 1.9, 0.6, 129),
    ("rkmeans", 27.8, 20.1, 256),
])
def test_reference_sids_reproduce_published_figures(name, coll3, coll4, level1_used):
    path = REFERENCE / f"{name}.index.json"
    if not path.is_file():
        pytest.skip(f"reference SIDs not found at {path} (shared data absent; set RECBOLE_SID_SHARED_DATA)")
    _, codes = read_sids(path)
    assert codes.shape == (4344, 4)
    three, four = sid_quality(codes, levels=3), sid_quality(codes)
    assert round(100 * three.collision_rate, 1) == coll3
    assert round(100 * four.collision_rate, 1) == coll4
    assert three.levels[0].codebook_size == 256 and three.codebook_size_inferred
    assert three.levels[0].codes_used == four.levels[0].codes_used == level1_used
