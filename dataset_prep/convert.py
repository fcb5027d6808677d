"""``convert-json``: the public JSON layout -> RecBole atomic files.

Input: ``X.inter.json`` = ``{user: [item, ...]}`` (each list in time order) and ``X.item.json`` =
``{item: {"title", "description", "brand", "categories"}}``.

Output in ``OUT/NAME/``:

* ``NAME.inter``: ``user_id:token  item_id:token  timestamp:float``; the timestamp is the position in the
  user's list (0, 1, 2, ...): it orders each user's interactions (what RecBole's ``order: TO`` split per user
  needs) but is not comparable across users.
* ``NAME.item``: ``item_id:token  title:token_seq  description:token_seq  brand:token  categories:token_seq
  category1:token``. Text is HTML-unescaped, tags stripped, tabs/newlines/runs of whitespace collapsed to one
  space and ``"`` replaced by ``''`` (RecBole's CSV reader treats a field that starts with ``"`` as quoted);
  in ``title``/``description``/``brand`` a semicolon, or a comma glued to a letter, gets a space after it and words are
  cut to 40 characters (RecBole stores a token_seq field's tokens in one fixed-width string array while
  loading: one 600-character "word" made Amazon's load take 1.3 GB); ``description`` is cut to ``max_words``
  words (64). ``categories`` holds one token per category level with
  the words of a level joined by ``_`` (``Industrial_&_Scientific Tapes,_Adhesives_&_Sealants ...``): a string
  category path is split on commas NOT followed by a space, because names such as ``Tapes, Adhesives &
  Sealants`` contain ", ". ``category1`` is the first level below the root when every categorised item shares
  the same first level (Amazon's ``Industrial & Scientific``), else the first level; empty when uncategorised.

Items of the item file with no interaction are kept (they join RecBole's item map as items without clicks).

Repeated (user, item) pairs (an item again in the same user's list, a re-purchase) are all kept, each at its
position, because RecBole reads every line as one interaction; their number is in the summary
(``repeated_pairs``, ``users_with_repeated_pairs``) and on stderr. RecBole's ``rm_dup_inter: first`` keeps only the
first of each when loading.
"""
from __future__ import annotations

import html
import json
import re
import sys
from collections import Counter
from pathlib import Path

from recbole_sid.atomic_io import atomic_write
from recbole_sid.exceptions import DataError

from dataset_prep.files import Staging, check_input

TEXT_KEYS = ("title", "description", "brand", "categories")
DEFAULT_MAX_WORDS = 64
_TAG = re.compile(r"<[^>]{0,400}>")
_WS = re.compile(r"\s+")
_CATEGORY_SPLIT = re.compile(r",(?! )")
_GLUED = re.compile(r";(?=\S)|,(?=[^\W\d_])")
#: longest word kept in a token_seq text field: RecBole 1.2.1 concatenates all tokens of a token_seq field into
#: one fixed-width numpy string array while remapping, so a single 600-character "word" costs GBs.
MAX_WORD_CHARS = 40


def clean_text(value, max_words: int | None = None, max_word_chars: int | None = MAX_WORD_CHARS) -> str:
    """HTML-unescaped, tag-free, one line, ``"`` -> ``''``, at most ``max_words`` words.

    A semicolon glued to the next character, or a comma glued to a letter, gets a space after it
    (``Red,Blue`` -> ``Red, Blue``; ``1,000`` is left alone) and words longer than ``max_word_chars`` are cut.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    text = html.unescape(text)  # doubly escaped entities (&amp;amp;) are common in scraped catalogues
    text = text.replace('"', "''")
    text = _GLUED.sub(lambda m: m.group(0) + " ", text)
    words = _WS.sub(" ", text).strip().split(" ")
    if max_words is not None and len(words) > max_words:
        words = words[:max_words]
    if max_word_chars is not None:
        words = [w[:max_word_chars] for w in words]
    return " ".join(w for w in words if w)


def split_categories(value) -> list[str]:
    """Category levels from a list or a comma-joined path (commas inside names are followed by a space)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        parts = []
        for v in value:  # nested lists (older Amazon dumps: [["A", "B"]]) are flattened
            parts.extend(split_categories(v) if isinstance(v, (list, tuple)) else [v])
    else:
        parts = _CATEGORY_SPLIT.split(str(value))
    return [c for c in (_clean_category(p) for p in parts) if c]


def _clean_category(value) -> str:
    text = _TAG.sub(" ", html.unescape(str(value)))
    return _WS.sub(" ", html.unescape(text).replace('"', "''")).strip()


def _load_json(path: Path, what: str):
    check_input(path, what)
    duplicates: list[str] = []

    def pairs(items):
        seen = {}
        for key, val in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = val
        return seen

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if duplicates:
        raise DataError(f"{path}: duplicate ids ({len(duplicates)}; first: {duplicates[:10]})")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by id, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no entries")
    return data


def _check_id(raw, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise DataError(f"{where}: id {raw!r} is not a string or an integer")
    text = str(raw)
    if not text.strip() or any(c in text for c in "\t\n\r"):
        raise DataError(f"{where}: id {raw!r} is empty or contains a tab/newline")
    return text


def convert_json(inter_json, item_json, dataset: str, out, overwrite: bool = False,
                 max_words: int = DEFAULT_MAX_WORDS, log=print) -> dict:
    """Write ``out/dataset/dataset.{inter,item}``; returns a summary dict.

    Repeated (user, item) pairs (an item again in the same user's list) are all kept, each at its position, as
    RecBole reads every line as one interaction; they are counted in the summary and logged to stderr."""
    inter_json, item_json, out = Path(inter_json), Path(item_json), Path(out)
    if not dataset or any(c in dataset for c in "/\\\t\n") or dataset.startswith("."):
        raise DataError(f"--dataset {dataset!r} is not a usable dataset name")
    if max_words is not None and max_words < 1:
        raise DataError(f"--max-words must be >= 1, got {max_words}")
    inters = _load_json(inter_json, "interaction file")
    items = _load_json(item_json, "item file")

    # interactions
    rows: list[tuple[str, str, int]] = []
    empty_users = 0
    for user, seq in inters.items():
        user_id = _check_id(user, str(inter_json))
        if not isinstance(seq, list):
            raise DataError(f"{inter_json}: user {user!r}: expected a list of item ids, got {type(seq).__name__}")
        if not seq:
            empty_users += 1
        for pos, item in enumerate(seq):
            rows.append((user_id, _check_id(item, f"{inter_json} (user {user!r})"), pos))
    if not rows:
        raise DataError(f"{inter_json}: no interactions")
    distinct = Counter(u for u, _ in {(u, i) for u, i, _ in rows})
    per_user = Counter(u for u, _, _ in rows)
    repeated = len(rows) - sum(distinct.values())
    repeated_users = sum(1 for u, n in per_user.items() if n > distinct[u])

    # items
    table: dict[str, tuple[str, str, str, list[str]]] = {}
    for item, entry in items.items():
        item_id = _check_id(item, str(item_json))
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise DataError(f"{item_json}: item {item!r}: expected an object with {list(TEXT_KEYS)}, "
                            f"got {type(entry).__name__}")
        table[item_id] = (clean_text(entry.get("title")), clean_text(entry.get("description"), max_words),
                          clean_text(entry.get("brand")), split_categories(entry.get("categories")))

    used = dict.fromkeys(r[1] for r in rows)
    missing = [i for i in used if i not in table]
    if missing:
        raise DataError(f"{inter_json}: {len(missing)} items have no entry in {item_json} (first 10: {missing[:10]})")
    empty = [i for i, (t, d, b, c) in table.items() if not (t or d or b or c)]
    if empty:
        raise DataError(f"{item_json}: {len(empty)} items have empty text (no title, description, brand or "
                        f"categories; first 10: {empty[:10]})")

    firsts = {c[0] for (_, _, _, c) in table.values() if c}
    root = next(iter(firsts)) if len(firsts) == 1 else None

    def category1(cats: list[str]) -> str:
        if root is not None:
            return cats[1] if len(cats) > 1 else ""
        return cats[0] if cats else ""

    folder = out / dataset
    inter_path, item_path = folder / f"{dataset}.inter", folder / f"{dataset}.item"
    with Staging([inter_path, item_path], overwrite) as stage:
        with atomic_write(stage.path(inter_path)) as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            f.writelines(f"{u}\t{i}\t{p}\n" for u, i, p in rows)
        with atomic_write(stage.path(item_path)) as f:
            f.write("item_id:token\ttitle:token_seq\tdescription:token_seq\tbrand:token\tcategories:token_seq\t"
                    "category1:token\n")
            for item_id, (title, desc, brand, cats) in table.items():
                tokens = " ".join(c.replace(" ", "_") for c in cats)
                f.write(f"{item_id}\t{title}\t{desc}\t{brand}\t{tokens}\t{category1(cats)}\n")
        stage.commit()
    if repeated:
        log(f"warning: {inter_json}: {repeated} repeated (user, item) pairs ({repeated_users} users) kept as separate "
            f"interactions, each at its position in the list; RecBole reads every line (set rm_dup_inter: first in "
            f"RecBole's config to keep only the first)", file=sys.stderr)
    return {
        "inter": str(inter_path), "item": str(item_path), "users": len(inters) - empty_users,
        "items": len(table), "interactions": len(rows), "items_without_interactions": len(table) - len(used),
        "users_without_interactions": empty_users, "repeated_pairs": repeated,
        "users_with_repeated_pairs": repeated_users, "category_root": root,
    }
