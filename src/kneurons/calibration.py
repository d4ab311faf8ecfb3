"""The run's reference noise scale r: noise levels in model units, the same for every method (no model needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneurons.errors import DataError
from kneurons.h5io import read_dump
from kneurons.io import per_image_files, write_json

SCALES = ("absolute", "calibrated")


def reference_scale(o_std: Sequence[np.ndarray]) -> float:
    """r = median over all neurons (l, i) of std_p O'[l, :, i], averaged over the images: ``o_std`` holds one
    (L, d_ff) array of std_p O' per original image of D."""
    return float(np.median(np.mean(np.stack(o_std), axis=0)))


def noise_scale_stage(scale: str, levels: Sequence[float], activation_dirs: Sequence[str], out_json: str) -> None:
    """Rule noise_scale: the reference scale r of this run and the absolute noise s.d. each level implies.

    ``scale`` "absolute": levels are in activation units (r = 1, the paper's); "calibrated": levels are multiples
    of r computed from the activation dumps of D's original images (each distinct image once).
    """
    if scale not in SCALES:
        raise DataError(f"noise.scale: {scale!r} is not one of {', '.join(SCALES)}")
    record: dict = {"scale": scale, "levels": [float(v) for v in levels]}
    if scale == "absolute":
        r = 1.0
        record |= {"statistic": "none: levels are in activation units", "images": 0}
    else:
        stds = {}
        for d in activation_dirs:
            for path in per_image_files(d, ".h5"):
                stds.setdefault(path.stem, read_dump(path, ["o_std"])[0]["o_std"])
        if not stds:
            raise DataError("noise.scale calibrated: no activation dump to calibrate on (no sample in D)")
        r = reference_scale([stds[k] for k in sorted(stds, key=int)])
        record |= {
            "statistic": "median over (layer, unit) of the mean over D's images of std_p O'",
            "images": len(stds),
        }
    write_json(out_json, record | {"reference_scale": r, "noise_sd": [float(v) * r for v in levels]})
