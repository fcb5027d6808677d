"""How well embeddings group items of the same category: share of k nearest neighbours with the same label."""
from __future__ import annotations

import numpy as np


def nearest_neighbours(emb: np.ndarray, k: int = 10, block: int = 2048) -> np.ndarray:
    """``[N, k]`` indices of each row's ``k`` most cosine-similar other rows (self excluded), best first."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    n = len(unit)
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        sim = unit[start:start + block] @ unit.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[start:start + block] = np.take_along_axis(top, order, axis=1)
    return out


def category_agreement(emb: np.ndarray, labels, k: int = 10, seed: int = 0, repeats: int = 5) -> dict:
    """Mean share of the ``k`` nearest neighbours that share the query's label, against random neighbours.

    Queries: items with a non-empty label; neighbours: any other item (an unlabelled neighbour never matches).
    ``random_expected``: mean over queries of ``(n_c - 1) / (N - 1)`` (k neighbours drawn uniformly without
    replacement from the other N - 1 items); ``random_sampled``: the same measured with ``repeats`` draws.
    """
    labels = np.asarray([str(x) for x in labels], dtype=object)
    n = len(labels)
    query = np.where(labels != "")[0]
    nn = nearest_neighbours(emb, k)
    share = float((labels[nn[query]] == labels[query, None]).mean())
    values, counts = np.unique(labels[query], return_counts=True)
    freq = dict(zip(values, counts))
    expected = float(np.mean([(freq[labels[q]] - 1) / (n - 1) for q in query]))
    rng = np.random.default_rng(seed)
    sampled = []
    for _ in range(repeats):
        # k distinct others per query: positions in [0, N - 1) shifted past the query; redraw rows with repeats
        draws = rng.integers(0, n - 1, size=(len(query), k))
        while True:
            s = np.sort(draws, axis=1)
            bad = np.where((s[:, 1:] == s[:, :-1]).any(axis=1))[0]
            if not len(bad):
                break
            draws[bad] = rng.integers(0, n - 1, size=(len(bad), k))
        draws = draws + (draws >= query[:, None])
        sampled.append((labels[draws] == labels[query, None]).mean())
    return {"k": k, "queries": int(len(query)), "items": int(n), "categories": int(len(values)),
            "share": share, "random_expected": expected, "random_sampled": float(np.mean(sampled)),
            "lift": share / expected if expected > 0 else float("inf")}
