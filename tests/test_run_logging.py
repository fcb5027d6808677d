"""A run's log is free of RecBole's pandas FutureWarnings and of numpy 2 reprs in the result lines."""
import logging
import warnings

from recbole_sid.quick_start import run_recbole

from conftest import write_tiny_dataset


def test_run_logs_plain_floats_and_silences_only_recbole_pandas_warnings(in_tmp, caplog):
    root = write_tiny_dataset(in_tmp / "data")
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        result = run_recbole(model="BPR", dataset="tiny", saved=False, cmd_args=[], config_dict={
            "data_path": str(root), "epochs": 1, "show_progress": False})
        # the user's own code still gets the same warning after the run
        warnings.warn_explicit("A value is trying to be set on a copy of a DataFrame or Series through chained "
                               "assignment", FutureWarning, "user.py", 1, module="recbole_user_script")
    assert warnings.filters == filters_before
    pandas_warnings = [w for w in seen if issubclass(w.category, FutureWarning)
                       and ("DataFrame" in str(w.message) or "Series.agg" in str(w.message))]
    assert [w.filename for w in pandas_warnings] == ["user.py"]
    lines = [r.getMessage() for r in caplog.records if "best valid" in r.getMessage() or "test result" in r.getMessage()]
    assert len(lines) == 2
    for line in lines:
        assert "np.float64" not in line and "OrderedDict" not in line and "'recall@10': " in line
    assert result["test_result"]["recall@10"] >= 0
