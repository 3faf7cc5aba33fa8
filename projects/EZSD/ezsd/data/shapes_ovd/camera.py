"""The detection domain's camera: one fixed, class-independent photometric shift.

The CLIP domain is shot with a neutral camera. Every detection image goes through the same warm
colour cast, lower contrast, lens blur and sensor noise. Because the shift is systematic and the
same for all classes, a correction learnt from base classes alone can carry over to novel
classes: the kind of domain gap EZSD's CLIP re-normalization is meant to close.

Two strengths describe it, from a mild reference camera (gains 1.10/1.00/0.85, contrast x0.75,
blur sigma 0.6 px, noise sigma 6 grey levels): the colour pipeline's strength `colour` raises the
gains and the contrast factor to that power; the optics' strength `optics` scales blur and noise.
The colour pipeline (white balance, tone curve) is what differs systematically between cameras
and what normalization statistics can absorb; heavy blur and noise destroy information no
re-normalization can restore. So the detection camera has a strong colour pipeline and mild
optics, its colour strength chosen once by measurement (datasets/README.md).
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["CameraShift", "camera_shift", "DETECTION_CAMERA"]


@dataclass(frozen=True)
class CameraShift:
    gains: tuple  # per-channel (R, G, B) multipliers: a colour cast
    contrast: float  # factor on the deviation from the image's mean grey level
    blur: float  # Gaussian blur sigma in pixels
    noise: float  # Gaussian sensor noise sigma in grey levels

    def __call__(self, img, rng):
        """Apply to an (H, W, 3) float array in [0, 255]; returns a uint8 PIL RGB image."""
        img = img * np.asarray(self.gains, dtype=np.float32)
        img = img.mean() + self.contrast * (img - img.mean())
        out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        if self.blur > 0:
            out = out.filter(ImageFilter.GaussianBlur(self.blur))
        if self.noise > 0:
            noisy = np.asarray(out, dtype=np.float32) + rng.normal(0, self.noise, img.shape)
            out = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        return out


def camera_shift(colour, optics):
    """The camera of the given colour-pipeline and optics strengths (0 is neutral, 1 mild)."""
    return CameraShift(
        gains=(1.10**colour, 1.0, 0.85**colour),
        contrast=0.75**colour,
        blur=0.6 * optics,
        noise=6.0 * optics,
    )


DETECTION_CAMERA = camera_shift(colour=3.5, optics=1.0)
