"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``, so this folder is on sys.path)."""


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
