"""recbole_sid.data.encoders: one interface, the offline tfidf default and a local sentence-transformers model."""
import os
import sys

import numpy as np
import pytest

from recbole_sid.data.encoders import (DEFAULT_DIM, SentenceTransformerEncoder, TextEncoder, TfidfEncoder,
                                       available_encoders, get_encoder)
from recbole_sid.exceptions import ConfigError, DataError

TEXTS = ["red apple fruit", "green apple fruit", "yellow banana fruit", "steel hammer tool", "iron wrench tool",
         "brass screwdriver tool", "blue paint", "white paint"]
ST_NEEDED = "loading a sentence-transformers model needs the [text] extra (pip install recbole-sid[text])"


def test_get_encoder_and_interface():
    assert available_encoders() == ["sentence-transformers", "tfidf"]
    enc = get_encoder("tfidf", dim=5, model_path="ignored")
    assert isinstance(enc, TextEncoder) and isinstance(enc, TfidfEncoder) and enc.dim == 5
    assert get_encoder(None).dim == DEFAULT_DIM == 64
    with pytest.raises(ConfigError, match="unknown semantic encoder 'word2vec'"):
        get_encoder("word2vec")
    with pytest.raises(ConfigError, match="positive integer"):
        get_encoder("tfidf", dim=0)


def test_tfidf_deterministic_normalised_and_semantic():
    a = TfidfEncoder(dim=4).encode(TEXTS)
    b = TfidfEncoder(dim=4).encode(list(TEXTS))
    assert a.shape == (8, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sim = a @ a.T
    assert sim[3, 4] > sim[3, 0] and sim[0, 1] > sim[0, 6]


def test_tfidf_pads_when_corpus_is_smaller_than_dim():
    out = TfidfEncoder(dim=64).encode(["one text", "another text", "third"])
    assert out.shape == (3, 64)
    assert np.all(out[:, 2:] == 0)  # 3 texts span at most 2 SVD components
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert TfidfEncoder(dim=8).encode(["only one"]).shape == (1, 8)


def test_tfidf_bad_input():
    with pytest.raises(DataError, match="list of texts"):
        TfidfEncoder().encode("a single string")
    with pytest.raises(DataError, match="no texts"):
        TfidfEncoder().encode([])
    with pytest.raises(DataError, match="not"):
        TfidfEncoder().encode(["ok", None])


def test_sentence_transformers_refuses_hub_names_and_missing_dirs(tmp_path, monkeypatch):
    """The refusals happen before sentence_transformers is imported: they hold without the [text] extra (the
    package is made unimportable here, so this runs and can fail in every environment)."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import -> ImportError
    with pytest.raises(ConfigError, match="local model directory"):
        get_encoder("sentence-transformers")
    with pytest.raises(ConfigError, match="never downloads"):
        get_encoder("sentence-transformers", model_path="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="not a local directory"):
        get_encoder("sentence-transformers", model_path=str(tmp_path / "absent"))
    folder = tmp_path / "model"
    folder.mkdir()
    enc = get_encoder("sentence-transformers", model_path=str(folder))  # a local folder is accepted ...
    with pytest.raises(ConfigError, match=r"needs the 'sentence-transformers' package .*recbole-sid\[text\]"):
        enc.encode(["x"])  # ... and loading it without the package names the extra


def test_sentence_transformers_refuses_unloadable_folder(tmp_path):
    pytest.importorskip("sentence_transformers", reason=ST_NEEDED)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("not json")
    with pytest.raises(ConfigError, match="cannot load"):
        get_encoder("sentence-transformers", model_path=str(broken)).encode(["x"])


@pytest.fixture(scope="module")
def tiny_st_model(tmp_path_factory):
    """A randomly initialised 1-layer BERT + WordLevel tokenizer + mean pooling, saved as a sentence-transformer."""
    pytest.importorskip("sentence_transformers", reason=ST_NEEDED)
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models as tok_models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # older sentence-transformers
        from sentence_transformers.models import Pooling, Transformer

    root = tmp_path_factory.mktemp("tiny_st")
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    tok = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=32)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    hf_dir = root / "hf"
    BertModel(config).save_pretrained(str(hf_dir))
    fast.save_pretrained(str(hf_dir))
    transformer = Transformer(str(hf_dir), max_seq_length=32)
    model = SentenceTransformer(modules=[transformer, Pooling(16, "mean")], device="cpu")
    out = root / "st"
    model.save(str(out))
    return out


def test_sentence_transformers_local_model(tiny_st_model, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}
    import sentence_transformers

    real = sentence_transformers.SentenceTransformer

    def spy(*args, **kwargs):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        seen["path"] = args[0]
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    enc = get_encoder("sentence-transformers", model_path=str(tiny_st_model))
    assert isinstance(enc, SentenceTransformerEncoder)
    out = enc.encode(TEXTS)
    assert seen == {"offline": "1", "path": str(tiny_st_model.resolve())}
    assert "HF_HUB_OFFLINE" not in os.environ  # restored afterwards
    assert out.shape == (8, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(TEXTS), out, atol=1e-6)
    reduced = get_encoder("st", model_path=str(tiny_st_model), dim=4).encode(TEXTS)
    assert reduced.shape == (8, 4)
    with pytest.raises(ConfigError, match="exceeds"):
        get_encoder("sentence-transformers", model_path=str(tiny_st_model), dim=32).encode(TEXTS)
    sig = enc.signature()
    assert sig["encoder"] == "sentence-transformers" and sig["model_path"] == str(tiny_st_model.resolve())


def test_embed_cli_with_local_sentence_transformer(tiny_st_model, tmp_path):
    from dataset_prep.cli import main
    from recbole_sid.atomic_io import read_vectors

    folder = tmp_path / "st_ds"
    folder.mkdir()
    (folder / "st_ds.item").write_text("item_id:token\ttitle:token_seq\n" +
                                       "".join(f"i{k}\t{t}\n" for k, t in enumerate(TEXTS)))
    (folder / "st_ds.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti0\t1\nu1\ti3\t2\n")
    rc = main(["embed", "--dataset", "st_ds", "--data-path", str(tmp_path), "--encoder", "sentence-transformers",
               "--model-path", str(tiny_st_model)])
    assert rc == 0
    ids, vecs, _, _ = read_vectors(folder / "st_ds.itememb")
    assert ids == [f"i{k}" for k in range(8)] and vecs.shape == (8, 16)
