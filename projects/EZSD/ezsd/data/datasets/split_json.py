"""Write open-vocabulary split jsons from official COCO/LVIS annotation files."""

import json
import logging

from ezsd.utils.errors import UserInputError
from ezsd.utils.file_io import atomic_write_json

__all__ = ["read_json", "keep_categories", "write_json"]

logger = logging.getLogger(__name__)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path}: not valid JSON ({e})") from None


def keep_categories(data, keep_names, source, drop_other_categories=True):
    """Keep the annotations of the categories named `keep_names` (all images are kept).

    Args:
        data (dict): a COCO- or LVIS-format json.
        keep_names (iterable[str]): category names to keep; each must exist in `data`.
        source (str): the file `data` came from, for error messages.
        drop_other_categories (bool): also remove the other categories from "categories"
            (COCO training splits list base classes only; LVIS keeps its full category table).
    """
    keep_names = set(keep_names)
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    unknown = keep_names - set(name_of.values())
    if unknown:
        raise UserInputError(f"{source}: has no categories named {sorted(unknown)}")
    keep_ids = {i for i, n in name_of.items() if n in keep_names}
    out = dict(data)
    out["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep_ids]
    if drop_other_categories:
        out["categories"] = [c for c in data["categories"] if c["id"] in keep_ids]
    logger.info(
        f"{source}: kept {len(out['annotations'])} of {len(data['annotations'])} boxes "
        f"({len(keep_ids)} of {len(name_of)} categories)"
    )
    return out


def write_json(path, data):
    atomic_write_json(path, data)
    logger.info(f"wrote {path}")
