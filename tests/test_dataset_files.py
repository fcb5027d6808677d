"""The interaction files a run will read are checked before RecBole loads them; errors name the file."""
import pytest

from recbole_sid import cli
from recbole_sid.config import Config
from recbole_sid.exceptions import DataError
from recbole_sid.quick_start import check_dataset_files, run_recbole

from conftest import write_tiny_dataset

HEADER = "user_id:token\titem_id:token\trating:float\n"


def _tiny(in_tmp, inter_text=None, **config):
    root = write_tiny_dataset(in_tmp / "data")
    inter = root / "tiny" / "tiny.inter"
    if inter_text is not None:
        inter.write_text(inter_text)
    return Config("BPR", "tiny", config_dict={"data_path": str(root), **config}, cmd_args=[]), inter


@pytest.mark.parametrize("text, message", [
    ("", r"the file is empty"),
    ("\n", r"the file is empty"),
    ("user_id\titem_id\nu1\ti1\n", r"header column 'user_id' is not of the form 'name:type'"),
    ("user_id:token\titem_id:int\nu1\ti1\n", r"column 'item_id' has unknown type 'int' \(RecBole types: token, "),
    (HEADER, r"a header and no data row"),
    (HEADER + "\n\n", r"a header and no data row"),
    ("user_id:token\titem:token\nu1\ti1\n", r"no 'item_id' column, which ITEM_ID_FIELD = item_id names"),
    ("user_id:token item_id:token\nu1 i1\n", r"not of the form 'name:type'.*separated by '\\t'"),
])
def test_bad_inter_file_is_named_with_what_was_expected(in_tmp, text, message):
    config, inter = _tiny(in_tmp, text)
    with pytest.raises(DataError, match=message) as err:
        check_dataset_files(config)
    assert str(inter) in str(err.value)


def test_good_files_and_excluded_id_columns_pass(in_tmp):
    config, inter = _tiny(in_tmp)
    check_dataset_files(config)
    check_dataset_files(Config("BPR", "ml-100k", cmd_args=[]))
    # load_col leaves the item id out: its absence is RecBole's business (the file itself is well formed)
    config, inter = _tiny(in_tmp, "user_id:token\trating:float\nu1\t4\n",
                          load_col={"inter": ["user_id", "rating"]})
    check_dataset_files(config)


def test_benchmark_files_are_checked_each(in_tmp):
    config, inter = _tiny(in_tmp, benchmark_filename=["train", "valid", "test"])
    lines = inter.read_text().splitlines(keepends=True)
    for part, rows in (("train", lines[1:-20]), ("valid", lines[-20:-10]), ("test", [])):
        (inter.parent / f"tiny.{part}.inter").write_text(lines[0] + "".join(rows))
    with pytest.raises(DataError, match=r"tiny\.test\.inter: a header and no data row"):
        check_dataset_files(config)


def test_run_and_cli_stop_before_recbole_loads(in_tmp, capsys):
    root = write_tiny_dataset(in_tmp / "data")
    (root / "tiny" / "tiny.inter").write_text("")
    with pytest.raises(DataError, match="tiny.inter: the file is empty"):
        run_recbole(model="BPR", dataset="tiny", config_dict={"data_path": str(root)}, cmd_args=[])
    assert cli.main(["--model=BPR", "--dataset=tiny", f"--data_path={root}"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps its one-paragraph error
    assert "tiny.inter" in err and "the file is empty" in err and "not enough values" not in err
