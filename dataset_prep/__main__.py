import sys

from dataset_prep.cli import main

sys.exit(main())
