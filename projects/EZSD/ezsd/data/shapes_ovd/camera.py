"""The detection domain's camera: one fixed, class-independent photometric shift.

The CLIP domain is shot with a neutral camera. Every detection image goes through the same warm
colour cast, lower contrast, lens blur and sensor noise. Because the shift is systematic and the
same for all classes, a model can learn to undo it from base classes alone and the correction
carries over to novel classes; this is the domain gap EZSD's CLIP re-normalization closes.

Its strength is one number: strength 1 is a mild camera (gains 1.10/1.00/0.85, contrast x0.75,
blur sigma 0.6 px, noise sigma 6 grey levels); strength s raises gains and contrast to the power s
and scales blur and noise by s. The value used was chosen once by measurement (datasets/README.md).
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


def camera_shift(strength):
    """The camera of a given strength (0 is neutral, 1 mild; see module docstring)."""
    s = float(strength)
    return CameraShift(gains=(1.10**s, 1.0, 0.85**s), contrast=0.75**s, blur=0.6 * s, noise=6.0 * s)


DETECTION_CAMERA = camera_shift(2.0)
