"""`import ezsd` registers and does nothing else (issue #22): it leaves `warnings.filters` as they
were, opens no file under DETECTRON2_DATASETS (a malformed shapes_ovd/split.json there does not
break it; the step that uses the dataset reports the file), and does not load the detector. No
module under ezsd/offline/ or ezsd/clip/ imports ezsd.modeling, directly or through `import ezsd`.
Each check runs in a fresh interpreter, since this one has imported everything already."""

import json
import os
import subprocess
import sys

import ezsd

PACKAGE = os.path.dirname(ezsd.__file__)

_IMPORT_EZSD = r"""
import json, os, sys, warnings
root = os.path.realpath(os.environ["DETECTRON2_DATASETS"])
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(root + os.sep):
            opened.append(path)
sys.addaudithook(hook)
before = list(warnings.filters)
import ezsd
result = dict(filters_unchanged=warnings.filters == before, opened=list(opened),
              modeling_loaded="ezsd.modeling" in sys.modules)
from detectron2.data import MetadataCatalog
try:
    MetadataCatalog.get("shapes_ovd_val").novel_classes
except Exception as e:
    result["first_use"] = f"{type(e).__name__}: {e}"
print(json.dumps(result))
"""


def _python(code, env=None):
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_ezsd_has_no_side_effects(tmp_path):
    (tmp_path / "shapes_ovd").mkdir()
    (tmp_path / "shapes_ovd" / "split.json").write_text("{not json")
    result = _python(_IMPORT_EZSD, env=dict(DETECTRON2_DATASETS=str(tmp_path)))
    assert result["filters_unchanged"]
    assert result["opened"] == []
    assert not result["modeling_loaded"]
    # the file is read, and refused in one line, when the dataset's metadata is first used
    assert result["first_use"].startswith("UserInputError: ")
    assert "split.json: not a ShapesOVD split file" in result["first_use"]


def _modules(subpackage):
    folder = os.path.join(PACKAGE, subpackage)
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py"))
    return [f"ezsd.{subpackage}" + ("" if n == "__init__" else f".{n}") for n in names]


def test_offline_and_clip_modules_never_import_the_detector():
    modules = _modules("offline") + _modules("clip")
    assert "ezsd.offline.pipeline" in modules and "ezsd.clip.loading" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'ezsd.modeling' in sys.modules:\n"
        "        print(json.dumps(name)); break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    assert _python(code) is None, "this module loads ezsd.modeling"
