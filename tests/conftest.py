"""Shared fixtures: a scratch working directory (RecBole writes log/ and saved/ into the cwd) and shared data."""
import os
import sys
from pathlib import Path

# One OpenMP thread per process (tests and the CLIs they launch) unless the caller says otherwise: on a 2-core
# machine, faiss and torch thread pools oversubscribe badly when several processes run (tiny OPQ: 7 ms vs 4.7 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$RECBOLE_SID_SHARED_DATA``."""
    return Path(os.environ.get("RECBOLE_SID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside an empty temporary directory (RecBole writes ./log and ./saved)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def amazon_dir():
    path = shared_data_dir() / "amazon-scientific"
    if not (path / "Scientific.inter.json").is_file():
        pytest.skip(f"amazon-scientific benchmark data not found at {path} (set RECBOLE_SID_SHARED_DATA)")
    return path


def cli_env(**extra):
    """Environment for CLI subprocesses: the source tree importable, quiet progress bars."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable


def write_tiny_dataset(root: Path, name: str = "tiny", n_users: int = 60, n_items: int = 48, seed: int = 0,
                       with_user_profile: bool = True) -> Path:
    """A small synthetic RecBole dataset with item text (and user profiles): ``root/name/name.{inter,item,user}``.

    Items belong to 4 topics (their titles share topic words); users prefer one topic, so both the text and the
    clicks carry signal. Returns ``root`` (use it as ``data_path``).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = ["space rocket orbit", "garden flower soil", "kitchen knife cook", "guitar music chord"]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    item_topic = np.arange(n_items) % len(topics)
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\tcategory:token\n")
        for i in range(n_items):
            words = topics[item_topic[i]].split() + [f"w{rng.integers(0, 30)}", f"model{i}"]
            f.write(f"i{i}\t{' '.join(words)}\t{topics[item_topic[i]].split()[0]}\n")
    rows = []
    for u in range(n_users):
        liked = np.where(item_topic == u % len(topics))[0]
        chosen = set(rng.choice(liked, size=min(8, len(liked)), replace=False).tolist())
        chosen |= set(rng.choice(n_items, size=3, replace=False).tolist())
        for t, i in enumerate(sorted(chosen, key=lambda _: rng.random())):
            rows.append((f"u{u}", f"i{i}", 4, 1000 * u + t))
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")
    if with_user_profile:
        with open(folder / f"{name}.user", "w") as f:
            f.write("user_id:token\tage:token\toccupation:token\n")
            for u in range(n_users):
                f.write(f"u{u}\t{20 + u % 5 * 10}\t{['student', 'engineer', 'artist'][u % 3]}\n")
    return root


#: config that makes every SID model fast on the tiny dataset
TINY_SID_CONFIG = {
    "sid_levels": 2, "sid_codebook_size": 8, "embedding_size": 16, "sid_code_dim": 8,
    "rqvae_hidden_dims": [16], "tokenizer_epochs": 3, "tokenizer_batch_size": 32, "cf_epochs": 2,
    "adapter_epochs": 2, "cf_embedding_size": 8, "user_sid_levels": 2, "user_sid_codebook_size": 8,
    "semantic_dim": 16, "epochs": 2, "train_batch_size": 128, "das_batch_size": 64,
    "das_rqvae_pretrain_epochs": 2, "das_icdm_pretrain_epochs": 2, "das_joint_epochs": 2,
    "show_progress": False, "eval_batch_size": 4096, "kmeans_iters": 5,
}
#: every SID model of the plugin (each is a tokenizer + the shared SID head)
SID_MODELS = ["RQKMeans", "RQVAE", "LETTER", "QARM", "DAS"]
