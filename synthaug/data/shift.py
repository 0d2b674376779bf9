"""An acquisition shift (`data.shift`): the evaluated site's real images as another scanner and staining protocol
would have made them, for cross-site studies. One fixed, documented transform per site (not an augmentation):
each RGB pixel's stain concentrations (haematoxylin, eosin, DAB; colour deconvolution with Ruifrok & Johnston's
stain vectors, as scikit-image's rgb2hed, without its clipping of negative concentrations, so that no shift is
exactly no change) are scaled and offset, then mixed back to RGB and the illumination scaled.

It applies to the evaluated site's train subset, val and test (regimes.load_regime, evaluate.load_eval_data), never to
the other site's real images or to a release: those come from the other site's scanner.
"""

from __future__ import annotations

import numpy as np

from synthaug.core.errors import UserError
from synthaug.recipe.sections import ShiftConfig

# Ruifrok & Johnston (Anal. Quant. Cytol. Histol. 2001): optical density of haematoxylin, eosin and DAB per RGB channel
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_FLOOR = 1e-6  # the darkest intensity, so that the optical density stays finite


def shift_images(images: np.ndarray, shift: ShiftConfig | None) -> np.ndarray:
    """uint8 (N, H, W, 3) images under `shift` (None: unchanged)."""
    if shift is None:
        return images
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError("data.shift: a stain shift needs RGB images (3 channels)")
    density = -np.log(np.maximum(images.astype(np.float64) / 255.0, _FLOOR))
    stains = density @ HED_FROM_RGB
    stains = stains * np.asarray(shift.hed_scale) + np.asarray(shift.hed_bias)
    rgb = np.exp(-(stains @ RGB_FROM_HED)) * (1.0 + shift.brightness)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
