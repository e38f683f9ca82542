"""``python -m tfgb.bench SUBCOMMAND``: see :mod:`tfgb.bench`."""
import sys

from tfgb.bench import main

sys.exit(main())
