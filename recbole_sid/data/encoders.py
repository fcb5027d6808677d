"""Text encoders behind one small interface: ``TextEncoder.encode(texts) -> np.ndarray [N, D]``.

* ``tfidf`` (default): offline and deterministic. TF-IDF (sublinear tf) over word uni/bi-grams plus TF-IDF
  over character 3-5-grams (within word boundaries), each block keeping the 50,000 most frequent terms that
  occur in at least 2 texts (1 when there are fewer than 50 texts), the two blocks weighted equally, reduced
  with ``TruncatedSVD`` (randomized, 5 power iterations, ``random_state=0``) and L2-normalised. It is *transductive*: ``encode`` fits on the texts it is given,
  so encode a whole catalogue in one call. When the corpus has fewer usable dimensions than ``dim``
  (tiny data), the missing columns are zeros, so the output is always ``[N, dim]``.
* ``sentence-transformers``: loads a LOCAL model directory with ``SentenceTransformer(path)`` while
  ``HF_HUB_OFFLINE=1``/``TRANSFORMERS_OFFLINE=1``; a hub name or a missing folder is refused (nothing is ever
  downloaded). Outputs are L2-normalised; ``dim`` (optional) reduces them with a fixed-seed ``TruncatedSVD``
  and must not exceed the model's own dimension.

``get_encoder(name, **kw)`` builds one by name; ``encoder.signature()`` is the part of a cache key that
identifies the encoder (name, dimension, model path, version).
"""
from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from recbole_sid.exceptions import ConfigError, DataError

#: default output dimension of the ``tfidf`` encoder (``semantic_dim`` / ``--dim``).
DEFAULT_DIM = 64
#: bump when the encoders' output for the same input changes, so cached vectors are rebuilt.
ENCODER_VERSION = "1"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise DataError("encode() expects a list of texts, got a single string")
    texts = list(texts)
    if not texts:
        raise DataError("encode() got no texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"encode() expects strings; rows {bad[:10]} are not")
    return texts


class TextEncoder(ABC):
    """``encode(texts) -> float32 [len(texts), dim]``, rows L2-normalised (a row with no content may be 0)."""

    name: str = "base"

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (one string per entity)."""

    @abstractmethod
    def signature(self) -> dict:
        """JSON-serialisable description of everything that changes the output (for cache keys)."""


class TfidfEncoder(TextEncoder):
    """TF-IDF (words + character n-grams) -> TruncatedSVD -> L2 normalisation; offline, deterministic."""

    name = "tfidf"

    def __init__(self, dim: int | None = None, random_state: int = 0, word_ngrams=(1, 2), char_ngrams=(3, 5),
                 max_features: int | None = 50_000, min_df: int | None = None, n_iter: int = 5):
        dim = DEFAULT_DIM if dim is None else dim
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"semantic_dim / --dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.random_state = int(random_state)
        self.word_ngrams = tuple(word_ngrams)
        self.char_ngrams = tuple(char_ngrams)
        self.max_features = max_features
        self.min_df = min_df
        self.n_iter = int(n_iter)

    def signature(self) -> dict:
        return {"encoder": self.name, "dim": self.dim, "random_state": self.random_state,
                "word_ngrams": list(self.word_ngrams), "char_ngrams": list(self.char_ngrams),
                "max_features": self.max_features, "min_df": self.min_df, "n_iter": self.n_iter,
                "version": ENCODER_VERSION}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import scipy.sparse as sp
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = _check_texts(texts)
        blocks = []
        # terms seen in one text only cannot make two texts similar: drop them, except on tiny corpora
        min_df = self.min_df if self.min_df is not None else (2 if len(texts) >= 50 else 1)
        # token_pattern keeps one-character tokens ("M", "F", "3"): profile fields are often that short.
        word = TfidfVectorizer(analyzer="word", ngram_range=self.word_ngrams, token_pattern=r"(?u)\b\w+\b",
                               sublinear_tf=True, min_df=min_df, max_features=self.max_features, dtype=np.float32)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, sublinear_tf=True, min_df=min_df,
                               max_features=self.max_features, dtype=np.float32)
        for vectorizer in (word, char):
            try:
                blocks.append(vectorizer.fit_transform(texts))
            except ValueError:  # empty vocabulary (e.g. only punctuation): this block contributes nothing
                continue
        if not blocks:
            raise DataError("tfidf encoder: the texts contain no words or characters to encode")
        # each block is row-normalised by TfidfVectorizer; 1/sqrt(#blocks) keeps the rows unit-norm.
        matrix = sp.hstack(blocks, format="csr") * np.float32(1.0 / np.sqrt(len(blocks)))
        n_rows, n_cols = matrix.shape
        k = min(self.dim, n_cols - 1, n_rows - 1)
        out = np.zeros((n_rows, self.dim), dtype=np.float32)
        if k >= 1:
            svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=self.n_iter,
                               random_state=self.random_state)
            reduced = svd.fit_transform(matrix).astype(np.float32)
            # fix each component's sign (largest |loading| positive) so the output does not flip between
            # BLAS builds.
            signs = np.sign(reduced[np.abs(reduced).argmax(axis=0), np.arange(k)])
            signs[signs == 0] = 1
            out[:, :k] = reduced * signs
        else:  # one row or one feature: nothing to reduce; keep what fits
            dense = matrix.toarray().astype(np.float32)
            width = min(self.dim, dense.shape[1])
            out[:, :width] = dense[:, :width]
        return l2_normalize(out)


@contextlib.contextmanager
def _offline_env():
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k in keys:
            os.environ[k] = "1"
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model read from a local directory (never a hub name, never a download)."""

    name = "sentence-transformers"

    def __init__(self, model_path=None, dim: int | None = None, batch_size: int = 64, device: str = "cpu",
                 random_state: int = 0):
        if not model_path:
            raise ConfigError("the sentence-transformers encoder needs a local model directory: set "
                              "semantic_model_path (config) or --model-path (CLI)")
        path = Path(os.path.expanduser(str(model_path)))
        if not path.is_dir():
            raise ConfigError(f"sentence-transformers model path {model_path!r} is not a local directory; "
                              f"recbole-sid never downloads models (hub names are refused). Point "
                              f"semantic_model_path / --model-path at a folder saved with SentenceTransformer.save().")
        if dim is not None and (not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1):
            raise ConfigError(f"semantic_dim / --dim must be a positive integer, got {dim!r}")
        self.model_path = path.resolve()
        self.dim = None if dim is None else int(dim)
        self.batch_size = int(batch_size)
        self.device = device
        self.random_state = int(random_state)
        self._model = None

    def signature(self) -> dict:
        # the model folder's config and weights timestamps stand in for its content (hashing GBs is too slow)
        stamps = sorted((p.name, int(p.stat().st_mtime), p.stat().st_size)
                        for p in self.model_path.iterdir() if p.is_file())
        return {"encoder": self.name, "dim": self.dim, "model_path": str(self.model_path), "files": stamps,
                "version": ENCODER_VERSION}

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigError("the sentence-transformers encoder needs the 'sentence-transformers' package "
                                  "(pip install recbole-sid[text])") from exc
            with _offline_env():
                try:
                    self._model = SentenceTransformer(str(self.model_path), device=self.device)
                except Exception as exc:  # noqa: BLE001 - any loader failure is a bad model folder
                    raise ConfigError(f"cannot load a sentence-transformers model from {self.model_path} "
                                      f"(offline): {exc}") from exc
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        model = self._load()
        with _offline_env():
            out = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32)
        if self.dim is not None and self.dim != out.shape[1]:
            if self.dim > out.shape[1]:
                raise ConfigError(f"semantic_dim / --dim {self.dim} exceeds the model's dimension {out.shape[1]} "
                                  f"({self.model_path})")
            from sklearn.decomposition import TruncatedSVD

            k = min(self.dim, out.shape[0] - 1)
            reduced = np.zeros((out.shape[0], self.dim), dtype=np.float32)
            if k >= 1:
                reduced[:, :k] = TruncatedSVD(n_components=k, random_state=self.random_state).fit_transform(out)
            out = reduced
        return l2_normalize(out)


_ENCODERS = {
    "tfidf": TfidfEncoder,
    "sentence-transformers": SentenceTransformerEncoder,
}
_ALIASES = {"sentence_transformers": "sentence-transformers", "st": "sentence-transformers", "default": "tfidf"}


def available_encoders() -> list[str]:
    return sorted(_ENCODERS)


def get_encoder(name: str | None = "tfidf", **kwargs) -> TextEncoder:
    """Encoder by name (``tfidf`` | ``sentence-transformers``); ``kwargs`` go to its constructor.

    ``model_path`` is accepted (and ignored) by ``tfidf`` so callers can pass their settings uniformly.
    """
    key = (name or "tfidf").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _ENCODERS:
        raise ConfigError(f"unknown semantic encoder {name!r}; choose one of {available_encoders()}")
    if key == "tfidf":
        kwargs.pop("model_path", None)
        kwargs.pop("batch_size", None)
        kwargs.pop("device", None)
    return _ENCODERS[key](**kwargs)
