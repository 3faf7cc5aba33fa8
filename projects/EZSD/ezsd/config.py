from detectron2.config import CfgNode as CN


def add_ezsd_config(cfg):
    """Add the config keys of EZSD. Every key has a one-line comment saying what it controls."""
    _C = cfg
    _C.MODEL.EZSD = CN()

    # CLIP used by the offline tools and the text embeddings: an OpenAI name ("ViT-B/32") or a
    # local state-dict file (a re-normalized checkpoint is such a file).
    _C.MODEL.EZSD.CLIP = CN()
    _C.MODEL.EZSD.CLIP.MODEL = "ViT-B/32"
    # Prompt templates for class-name text embeddings; several are averaged (prompt ensemble).
    _C.MODEL.EZSD.CLIP.PROMPTS = ["a photo of a {}"]
    # Region crops: the box is enlarged by this factor about its centre before cropping.
    _C.MODEL.EZSD.CLIP.CROP_SCALE = 1.2
    # Region crops: the enlarged box's sides are at least this many pixels.
    _C.MODEL.EZSD.CLIP.MIN_CROP_SIZE = 10.0
