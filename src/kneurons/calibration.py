"""The run's reference noise scale r: noise levels in model units, the same for every method (no model needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCALES = ("absolute", "calibrated")


def reference_scale(o_std: Sequence[np.ndarray]) -> float:
    """r = median over all neurons (l, i) of std_p O'[l, :, i], averaged over the images: ``o_std`` holds one
    (L, d_ff) array of std_p O' per original image of D."""
    return float(np.median(np.mean(np.stack(o_std), axis=0)))
