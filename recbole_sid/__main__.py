"""``python -m recbole_sid``: the same as the ``run_recbole`` console script."""
import sys

from recbole_sid.cli import main

sys.exit(main())
