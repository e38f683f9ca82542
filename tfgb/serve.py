"""``python -m tfgb.serve``: the command; the code is :mod:`tfgb.serving.server`."""
import sys

from tfgb.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
