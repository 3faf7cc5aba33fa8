"""The bad-input matrix (issue #7): each command-line tool, fed each of its bad inputs as a
subprocess, exits non-zero with one line `error: ...` that names the file, key or value at fault,
prints no traceback and leaves no output that looks valid (it is absent or unchanged). Inputs the
tools document as skipped or repaired (an unreadable image without --strict; boxes that are not
finite or have no size) are checked to be exactly that: a success with a warning.

The cases are a table of small functions that prepare their inputs in a folder of their own; one
module fixture then runs all selected cases, a few at a time. Each case is its own process: a fork
of a small server that has imported only the heavy third-party modules (torch, detectron2, CLIP),
in which the tool runs as `__main__` with its own argv, environment, stdout and stderr files, and
exit status (uncaught exceptions print their traceback, as the interpreter does). The tool, ezsd
and its dataset registration (which reads DETECTRON2_DATASETS) are imported fresh in each child.
That makes a case cost its own work instead of a 3-5 s interpreter start-up.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from test_precompute import ANCHORS

from ezsd.clip import save_clip_checkpoint
from ezsd.data.feature_store import FeatureStore
from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES, generate_shapes_ovd

from tiny_clip import tiny_clip
from train_workspace import CONFIG, train_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATE = os.path.join(REPO, "datasets", "prepare_shapes_ovd.py")
DUMP, FINETUNE, PRECOMPUTE, TRAIN = (
    os.path.join(REPO, "tools", f"{name}.py")
    for name in ("dump_text_embeddings", "finetune_clip", "precompute_clip_features", "train_net")
)
BASE = [c for c in CATEGORY_NAMES if c not in DEFAULT_NOVEL_CLASSES]
OTHER_NOVEL = ("lemon", "coin", "orange", "leaf")  # another base/novel split of the same classes
PRECOMPUTE_ARGS = [*ANCHORS, "--regions-per-image", "10", "--batch-size", "64", "--no-progress"]
WORKERS = 3  # cases run at a time

# The fork server (run with `python -c`). One request per stdin line: a JSON list of jobs
# {args, env, stdout, stderr}; one reply line: their exit statuses (negative: killed by a signal).
_SERVER = r"""
import json, os, runpy, signal, sys, traceback
import clip, detectron2.checkpoint, detectron2.data, detectron2.engine, detectron2.evaluation
import detectron2.modeling, pycocotools.coco, torch, torchvision  # noqa: F401  (slow, shared)

def child(job):
    code = 1
    try:
        signal.alarm(300)  # a hung case is killed (SIGALRM), never a hung test
        write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for target, path, flags in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], write),
                                    (2, job["stderr"], write)):
            fd = os.open(path, flags)
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = list(job["args"])
        sys.path[0] = os.path.dirname(sys.argv[0])
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

for line in sys.stdin:
    jobs = list(enumerate(json.loads(line)))
    codes, running = [None] * len(jobs), {}
    while jobs or running:
        while jobs and len(running) < int(sys.argv[1]):
            index, job = jobs.pop(0)
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                child(job)
            running[pid] = index
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    print(json.dumps(codes), flush=True)
"""


@dataclasses.dataclass
class Run:
    """One tool invocation and what it must do."""

    args: list  # the tool's path, then its arguments
    output: str  # the file a successful run writes: it must not appear or change on an error
    message: str  # distinctive part of the error line (of the warning when ok)
    root: str = None  # DETECTRON2_DATASETS (default: the shared world's)
    ok: bool = False  # a documented skip or repair: exit 0 with a warning
    check: object = None  # ok only: called with the output path


def _env(root):
    return dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")


class ToolRunner:
    """Runs tools as forks of the server above; `run` returns (exit status, stdout, stderr)s."""

    def __init__(self, folder):
        self.folder, self.count = folder, 0
        with open(folder / "server.stderr", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(WORKERS)],
                cwd=REPO,
                env=_env(folder),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def run(self, calls):
        """calls: (args, DETECTRON2_DATASETS) pairs; args[0] is the tool's path."""
        jobs = []
        for args, root in calls:
            self.count += 1
            out, err = (str(self.folder / f"{self.count}.{s}") for s in ("stdout", "stderr"))
            jobs.append(dict(args=[str(a) for a in args], env=_env(root), stdout=out, stderr=err))
        self.proc.stdin.write(json.dumps(jobs) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the tool server died: " + _read(self.folder / "server.stderr")[-2000:]
        return [
            (code, _read(job["stdout"]), _read(job["stderr"]))
            for code, job in zip(json.loads(line), jobs)
        ]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def _read(path):
    with open(path, errors="replace") as f:
        return f.read()


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = ToolRunner(tmp_path_factory.mktemp("tool_logs"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, runner):
    """ShapesOVD (4 + 2 images of 64 px) and one with another novel split; a tiny CLIP and one of
    another embedding size; text embeddings; region features made with each (real tools)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    other = root / "other_split"
    generate_shapes_ovd(str(root / "shapes_ovd"), seed=0, num_train=4, num_val=2, image_size=64)
    generate_shapes_ovd(
        str(other / "shapes_ovd"),
        seed=0,
        num_train=4,
        num_val=1,
        image_size=64,
        novel_classes=OTHER_NOVEL,
    )
    save_clip_checkpoint(tiny_clip(), str(root / "clip.pt"))
    save_clip_checkpoint(tiny_clip(seed=1, embed_dim=16), str(root / "clip16.pt"))
    stores = [
        (root, "clip.pt", "features"),
        (root, "clip16.pt", "features_clip16"),
        (other, "clip.pt", "features_other_split"),
    ]
    calls = [
        (
            [
                PRECOMPUTE,
                "--dataset",
                "shapes_ovd_train",
                "--clip",
                root / clip,
                "--output",
                root / out,
                *PRECOMPUTE_ARGS,
            ],
            data,
        )
        for data, clip, out in stores
    ]
    for names, out in (
        (BASE, "text_base.npy"),
        (CATEGORY_NAMES, "text_all.npy"),
        (BASE[::-1], "text_base_reordered.npy"),
    ):
        dump = [DUMP, "--clip", root / "clip.pt", "--names", ",".join(names), "--out", root / out]
        calls.append((dump, root))
    for code, _, err in runner.run(calls):
        assert code == 0, err[-2000:]
    return root


def _copy_data(world, d):
    shutil.copytree(world / "shapes_ovd", d / "shapes_ovd")
    return d / "shapes_ovd"


def _edit_json(path, edit):
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)
    return data


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _no_boxes(data):
    data["annotations"] = []


def _no_images(data):
    data["images"], data["annotations"] = [], []


# ---------------------------------------------------------------- datasets/prepare_shapes_ovd.py


def _generate(d, *extra, out=None):
    out = out or d / "gen"
    args = [
        GENERATE,
        "--out",
        out,
        "--num-train",
        "2",
        "--num-val",
        "1",
        "--image-size",
        "64",
        *extra,
    ]
    return args, os.path.join(out, "train.json")


def gen_unknown_novel(world, d):
    args, out = _generate(d, "--novel", "lemon,unicorn")
    return Run(args, out, "'unicorn' is not a ShapesOVD category")


def gen_zero_train_images(world, d):
    args, out = _generate(d, "--num-train", "0")
    return Run(args, out, "--num-train: 0 images")


def gen_negative_val_images(world, d):
    args, out = _generate(d, "--num-val", "-3")
    return Run(args, out, "--num-val: -3 images")


def gen_unwritable_output(world, d):
    (d / "a_file").write_text("not a folder")
    args, out = _generate(d, out=d / "a_file" / "shapes_ovd")
    return Run(args, out, "a_file/shapes_ovd: cannot write there")


# ---------------------------------------------------------------- tools/dump_text_embeddings.py


def _dump(world, d, *extra, clip=None):
    out = d / "text.npy"
    return [DUMP, "--clip", clip or world / "clip.pt", "--out", out, *extra], str(out)


def dump_empty_names(world, d):
    return Run(*_dump(world, d, "--names", " , ,"), "holds no class name")


def dump_unknown_dataset(world, d):
    return Run(*_dump(world, d, "--dataset", "no_such_dataset"), "'no_such_dataset'")


def dump_missing_clip(world, d):
    return Run(
        *_dump(world, d, "--dataset", "shapes_ovd_val", clip=d / "missing_clip.pt"),
        "missing_clip.pt' is neither an existing file",
    )


def dump_corrupt_clip(world, d):
    shutil.copy(world / "clip.pt", d / "cut_clip.pt")
    _truncate(d / "cut_clip.pt")
    return Run(
        *_dump(world, d, "--dataset", "shapes_ovd_val", clip=d / "cut_clip.pt"),
        "cut_clip.pt: not a CLIP checkpoint",
    )


def dump_garbage_clip(world, d):
    (d / "garbage_clip.pt").write_bytes(b"not a checkpoint\n" * 100)
    return Run(
        *_dump(world, d, "--dataset", "shapes_ovd_val", clip=d / "garbage_clip.pt"),
        "garbage_clip.pt: not a CLIP checkpoint (Unsupported operand",
    )


# ---------------------------------------------------------------- tools/finetune_clip.py


def _finetune(world, d, clip=None):
    args = [
        FINETUNE,
        "--clip",
        clip or world / "clip.pt",
        "--train-dataset",
        "shapes_ovd_train",
        "--val-dataset",
        "shapes_ovd_val",
        "--output-dir",
        d / "renorm",
        "--epochs",
        "1",
        "--images-per-batch",
        "2",
        "--no-progress",
    ]
    return args, str(d / "renorm" / "clip_renormalized.pt")


def finetune_missing_clip(world, d):
    return Run(*_finetune(world, d, clip=d / "missing_clip.pt"), "missing_clip.pt' is neither")


def finetune_no_base_boxes(world, d):
    _edit_json(_copy_data(world, d) / "train.json", _no_boxes)
    return Run(*_finetune(world, d), "shapes_ovd/train.json) has no base boxes", root=d)


def finetune_empty_dataset(world, d):
    _edit_json(_copy_data(world, d) / "train.json", _no_images)
    return Run(*_finetune(world, d), "train.json: holds no images", root=d)


def finetune_truncated_json(world, d):
    _truncate(_copy_data(world, d) / "train.json")
    return Run(*_finetune(world, d), "train.json: not valid JSON", root=d)


# ---------------------------------------------------------------- tools/precompute_clip_features.py


def _precompute(world, d, *extra, output=None):
    output = output or d / "features"
    args = [
        PRECOMPUTE,
        "--dataset",
        "shapes_ovd_train",
        "--clip",
        world / "clip.pt",
        "--output",
        output,
        *PRECOMPUTE_ARGS,
        *extra,
    ]
    return args, str(output / "manifest.json")


def _skipped_one(name):
    def check(manifest_file):
        manifest = FeatureStore(os.path.dirname(manifest_file)).manifest
        assert [os.path.basename(s["file_name"]) for s in manifest["skipped_images"]] == [name]
        assert len(manifest["images"]) == 3

    return check


def precompute_corrupt_image_strict(world, d):
    (_copy_data(world, d) / "train" / "000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return Run(*_precompute(world, d, "--strict"), "000001.jpg: cannot read image", root=d)


def precompute_corrupt_image_skipped(world, d):
    (_copy_data(world, d) / "train" / "000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return Run(
        *_precompute(world, d),
        "000001.jpg: cannot read image",
        root=d,
        ok=True,
        check=_skipped_one("000001.jpg"),
    )


def precompute_missing_image_strict(world, d):
    os.remove(_copy_data(world, d) / "train" / "000002.jpg")
    return Run(*_precompute(world, d, "--strict"), "000002.jpg: cannot read image", root=d)


def precompute_truncated_json(world, d):
    _truncate(_copy_data(world, d) / "train.json")
    return Run(*_precompute(world, d), "train.json: not valid JSON", root=d)


def precompute_nan_negative_zero_boxes(world, d):
    """Dropped with a warning by the dataset loader (register_ovd.sanitize_boxes): never targets."""
    bad = ([math.nan, 2.0, 10.0, 10.0], [5.0, 5.0, -8.0, 10.0], [5.0, 5.0, 12.0, 0.0])

    def edit(data):
        assert len(data["annotations"]) > len(bad)
        for anno, box in zip(data["annotations"], bad):
            anno["bbox"] = box

    kept = len(_edit_json(_copy_data(world, d) / "train.json", edit)["annotations"]) - len(bad)

    def check(manifest_file):
        store = FeatureStore(os.path.dirname(manifest_file))
        assert sum(int(store.load(i)["is_gt"].sum()) for i in store.manifest["images"]) == kept

    return Run(*_precompute(world, d), "dropped 3 invalid boxes", root=d, ok=True, check=check)


def precompute_into_store_of_other_clip(world, d):
    shutil.copytree(world / "features_clip16", d / "features")
    return Run(*_precompute(world, d), "clip_hash differ")


def precompute_into_store_of_other_classes(world, d):
    shutil.copytree(world / "features_other_split", d / "features")
    return Run(
        *_precompute(world, d), "(class_names, data differ)"
    )  # another split: other boxes too


def precompute_gt_inside_out_of_range(world, d):
    return Run(*_precompute(world, d, "--gt-inside", 1.5), "--gt-inside must be in [0, 1], not 1.5")


# ---------------------------------------------------------------- tools/train_net.py


def _train(world, d, *extra):
    return [TRAIN, *train_args(world, d / "run", *extra)], str(d / "run" / "model_final.pth")


def train_unknown_key_in_opts(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.NO_SUCH_KEY", 1),
        "command-line option: Non-existent key: MODEL.EZSD.NO_SUCH_KEY",
    )


def train_unknown_key_in_yaml(world, d):
    config = d / "my_config.yaml"
    config.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  EZSD:\n    NO_SUCH_KEY: 1\n")
    args, out = _train(world, d)
    assert args[1:3] == ["--config-file", CONFIG]
    args[2] = config
    return Run(args, out, "my_config.yaml: Non-existent config key: MODEL.EZSD.NO_SUCH_KEY")


def train_text_embeddings_of_other_rows(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.TEXT_EMBEDDINGS", world / "text_all.npy"),
        "text_all.npy (names in",
    )


def train_text_embeddings_of_other_names(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.TEXT_EMBEDDINGS", world / "text_base_reordered.npy"),
        f"class 0 is '{BASE[-1]}' but '{BASE[0]}' is expected",
    )


def train_missing_text_embeddings(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.TEXT_EMBEDDINGS", d / "missing_text.npy"),
        "missing_text.npy: no such file",
    )


def train_features_of_other_clip(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.DISTILL.FEATURES", world / "features_clip16"),
        "features_clip16/manifest.json with CLIP",
    )


def train_features_of_other_classes(world, d):
    return Run(
        *_train(world, d, "MODEL.EZSD.DISTILL.FEATURES", world / "features_other_split"),
        "features_other_split/manifest.json: made for the base classes",
    )


def train_empty_dataset(world, d):
    _edit_json(_copy_data(world, d) / "train.json", _no_images)
    return Run(*_train(world, d), "train.json: holds no images", root=d)


CASES = {
    f.__name__: f
    for f in (
        gen_unknown_novel,
        gen_zero_train_images,
        gen_negative_val_images,
        gen_unwritable_output,
        dump_empty_names,
        dump_unknown_dataset,
        dump_missing_clip,
        dump_corrupt_clip,
        dump_garbage_clip,
        finetune_missing_clip,
        finetune_no_base_boxes,
        finetune_empty_dataset,
        finetune_truncated_json,
        precompute_corrupt_image_strict,
        precompute_corrupt_image_skipped,
        precompute_missing_image_strict,
        precompute_truncated_json,
        precompute_nan_negative_zero_boxes,
        precompute_into_store_of_other_clip,
        precompute_into_store_of_other_classes,
        precompute_gt_inside_out_of_range,
        train_unknown_key_in_opts,
        train_unknown_key_in_yaml,
        train_text_embeddings_of_other_rows,
        train_text_embeddings_of_other_names,
        train_missing_text_embeddings,
        train_features_of_other_clip,
        train_features_of_other_classes,
        train_empty_dataset,
    )
}


def _fingerprint(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def results(world, runner, request, tmp_path_factory):
    """Every selected case prepared, then all run at once: {name: (Run, status, stdout, stderr,
    output fingerprint before)}."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module.__name__ == __name__ and hasattr(item, "callspec")
    ]
    runs = {name: CASES[name](world, tmp_path_factory.mktemp(name)) for name in selected}
    before = {name: _fingerprint(run.output) for name, run in runs.items()}
    done = runner.run([(run.args, run.root or world) for run in runs.values()])
    return {name: (runs[name], *result, before[name]) for name, result in zip(runs, done)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(results, case):
    run, status, out, err, before = results[case]
    assert "Traceback" not in err, err[-3000:]
    if run.ok:
        assert status == 0, err[-2000:]
        assert run.message in out + err, (out + err)[-2000:]
        assert os.path.exists(run.output)
        run.check(run.output)
        return
    assert status != 0, (out + err)[-2000:]
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith("error: ") and run.message in last, err[-2000:]
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err[-2000:]
    assert _fingerprint(run.output) == before, f"{run.output} was written"
