"""Writing the diagnostic figures of a run (PNG files in the run dir)."""
from __future__ import annotations

import os


def save_png(fig, path) -> str:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG, atomically (a temporary file renamed over
    ``path``, so a reader never sees half a file), close it and return the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)
