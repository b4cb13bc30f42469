"""Writing matplotlib figures: one place that creates the folder, saves and frees the figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import atomic_savefig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG/SVG by suffix; parent folders created) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, dpi=dpi, bbox_inches="tight")  # a reader never sees half an image
    plt.close(fig)
    return path
