"""CLIP embeddings of image regions, with the crop recipe of the official EZSD code.

Recipe per box (`CropSettings`): enlarge it by `scale` about its centre, each side at least
`min_size` pixels;
clip it to the image; zero-pad it to a square (side = the longer side of the clipped box) with the
object centred; resize to the CLIP input resolution; CLIP mean/std. Padding is black in pixel
space (zeros before mean/std), as a PIL crop pasted on a black square is.

All boxes of an image are cropped at once with `torchvision.ops.roi_align` over the square boxes,
then the part of each square outside its clipped box is zeroed (bins cut by the box edge keep the
fraction of their area inside it). roi_align with an adaptive sampling ratio averages
ceil(side / resolution)^2 bilinear samples per output pixel, i.e. it antialiases when shrinking a
large box. Against a per-box PIL reference (crop, paste on a black square, bicubic resize) this
differs by interpolation only: bilinear rather than bicubic when enlarging small boxes (slightly
softer), a box rather than a bicubic filter when shrinking large ones, and a sharp edge to the
black padding where PIL's bicubic blends over about two source pixels. On whole-pixel boxes (PIL
must round fractional crops) the mean difference is 0.5-2 grey levels of 255 per crop, and a
tiny random CLIP embeds the two alike (cosine > 0.999); see tests/test_region_encoder.py.
"""

import dataclasses

import numpy as np
import torch
from torchvision.ops import roi_align

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CropSettings",
    "flatten_crop",
    "crop_boxes",
    "crop_regions",
    "encode_regions",
]

# CLIP's preprocessing statistics (clip.clip._transform), for RGB in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CropSettings:
    """The crop recipe's numbers (see the module docstring); one object wherever crops are made."""

    scale: float = 1.2  # each box enlarged this many times about its centre
    min_size: float = 10.0  # each side of the enlarged box at least this many pixels


def flatten_crop(fields, scale_key="crop_scale", min_size_key="min_size"):
    """`fields` (a settings object's `dataclasses.asdict`) with its nested "crop" dict replaced, in
    place in the key order, by the two flat keys the manifests and reports record."""
    out = {}
    for key, value in fields.items():
        if key == "crop":
            out[scale_key], out[min_size_key] = value["scale"], value["min_size"]
        else:
            out[key] = value
    return out


def crop_boxes(boxes, height, width, crop=CropSettings()):
    """Return the (N, 4) XYXY crop of each box: enlarged, with minimum sides, clipped to the image.

    Boxes lying wholly outside the image give empty crops (zero width or height).
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = ((boxes[:, 2:] - boxes[:, :2]) * crop.scale).clamp(min=crop.min_size)
    low, high = centre - size / 2, centre + size / 2
    limit = boxes.new_tensor([width, height])
    low = torch.minimum(low.clamp(min=0), limit)
    high = torch.maximum(torch.minimum(high, limit), low)
    return torch.cat([low, high], dim=1)


def crop_regions(image, boxes, resolution, crop=CropSettings()):
    """Crop, square-pad, resize and normalise every box of one image in one go.

    Args:
        image: an RGB uint8 image, either a NumPy (H, W, 3) array (as PIL / detectron2's
            `read_image(..., format="RGB")` give) or a torch (3, H, W) tensor.
        boxes: (N, 4) XYXY boxes in absolute pixel coordinates of `image`.
        resolution (int): output side, the CLIP model's `visual.input_resolution`.
        crop (CropSettings): see the module docstring.

    Returns:
        float32 (N, 3, resolution, resolution) on the image's device, CLIP-normalised.
    """
    image = _as_chw_float(image)
    _, height, width = image.shape
    device = image.device
    crops = crop_boxes(boxes, height, width, crop).to(device)
    num = crops.shape[0]
    centre = (crops[:, :2] + crops[:, 2:]) / 2
    # The square's side is the crop's longer one (1e-3 keeps empty crops finite).
    side = (crops[:, 2:] - crops[:, :2]).amax(dim=1).clamp(min=1e-3)
    squares = torch.cat([centre - side[:, None] / 2, centre + side[:, None] / 2], dim=1)
    rois = torch.cat([squares.new_zeros(num, 1), squares], dim=1)
    out = roi_align(
        image[None], rois, output_size=resolution, spatial_scale=1.0, sampling_ratio=0, aligned=True
    )
    # Fraction of each output pixel's footprint inside the clipped box, per axis.
    steps = torch.arange(resolution + 1, device=device, dtype=torch.float32) / resolution
    edges = squares[:, None, :2] + steps[None, :, None] * side[:, None, None]  # (N, R+1, 2)
    low = torch.maximum(edges[:, :-1], crops[:, None, :2])
    high = torch.minimum(edges[:, 1:], crops[:, None, 2:])
    cover = ((high - low).clamp(min=0) / (side[:, None, None] / resolution)).clamp(max=1)  # (N,R,2)
    out.mul_((cover[:, :, 1, None] * cover[:, None, :, 0])[:, None])  # in place: crops are big
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1) * 255
    return out.sub_(mean).div_(std)


@torch.no_grad()
def encode_regions(model, image, boxes, crop=CropSettings(), batch_size=64):
    """Return float32 (N, D) CLIP image embeddings (not L2-normalised) of the boxes' crops.

    Crops are made and encoded `batch_size` boxes at a time on the model's device and in its
    dtype, so memory stays bounded for thousands of proposals. Image and boxes as `crop_regions`.
    """
    device = model.visual.conv1.weight.device
    image = _as_chw_float(image).to(device)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(device)
    resolution = model.visual.input_resolution
    outputs = []
    for i in range(0, boxes.shape[0], batch_size):
        crops = crop_regions(image, boxes[i : i + batch_size], resolution, crop)
        outputs.append(model.encode_image(crops.to(model.dtype)).float())
    if not outputs:
        return torch.zeros((0, model.text_projection.shape[1]), device=device)
    return torch.cat(outputs)


def _as_chw_float(image):
    """NumPy arrays are HWC (PIL, cv2, detectron2), torch tensors CHW (torchvision)."""
    if isinstance(image, np.ndarray):
        # astype copies: arrays from PIL are read-only, which torch.from_numpy warns about.
        image = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"expected an RGB image (H, W, 3) array or (3, H, W) tensor, got {tuple(image.shape)}"
        )
    return image.float()
