"""``python -m tfgb.export``: the command; the code is :mod:`tfgb.serving.export`."""
import sys

from tfgb.serving.export import main

if __name__ == "__main__":
    sys.exit(main())
