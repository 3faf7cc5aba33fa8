"""Faults injected into the real tools (issue #7): SIGKILL at a known point then a re-run, and
an output folder that cannot be written.

- tools/finetune_clip.py killed as epoch 2 starts (after epoch 1 was saved), re-run: the same
  checkpoint as an uninterrupted run, no epoch trained twice, no temp file left.
- tools/train_net.py killed right after its first checkpoint is written, re-run with --resume: it
  continues from that checkpoint's iteration and ends with model_final.pth.
(Kill points are reached, not timed: tests/killpoint.py.)
- A read-only output folder: precompute, finetune, dump_text_embeddings and train_net end with
  one line `error: ...` naming the folder, exit non-zero, and leave the files there unchanged.
(tools/precompute_clip_features.py killed at a random image: test_precompute.py.)
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from detectron2.engine import default_argument_parser

import ezsd.clip.text_cli as text_cli
import ezsd.offline.precompute_cli as precompute_cli
import ezsd.offline.renormalization_cli as renormalization_cli
from ezsd.engine import launch_main
from ezsd.offline.renormalization import CHECKPOINT_NAME, REPORT_NAME, STATE_NAME

from killpoint import killpoint_command, run_until_killpoint
from train_workspace import REPO, register_shapes_splits, tool_command, train_args

TRAIN, VAL = "test_faults_shapes_train", "test_faults_shapes_val"  # in-process names
RENORM = ["--epochs", 12, "--images-per-batch", 1, "--lr", "1e-2", "--seed", 3, "--no-progress"]
# train_net at its cheapest: 96 px, few proposals, no evaluation.
FAST = [
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MAX_SIZE_TRAIN",
    96,
    "DATASETS.TEST",
    "()",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    64,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    64,
]


@pytest.fixture(scope="module")
def world(shapes_workspace):
    """The shared workspace, its ShapesOVD splits also registered in this process."""
    root, env = shapes_workspace
    register_shapes_splits(root / "shapes_ovd", TRAIN, VAL)
    return root, env


def _temp_files(folder):
    return sorted(str(p) for p in folder.rglob(".tmp-*"))


# ---------------------------------------------------------------- SIGKILL, then a re-run


def test_finetune_killed_mid_epoch_then_rerun_equals_uninterrupted(world):
    root, env = world
    reference = root / "faults_renorm_reference"
    renormalization_cli.main(
        list(
            map(
                str,
                [
                    "--clip",
                    root / "clip.pt",
                    "--train-dataset",
                    TRAIN,
                    "--val-dataset",
                    VAL,
                    "--output-dir",
                    reference,
                    *RENORM,
                ],
            )
        )
    )
    out = root / "faults_renorm_killed"
    cmd = tool_command(
        "finetune_clip.py",
        "--clip",
        root / "clip.pt",
        "--train-dataset",
        "shapes_ovd_train",
        "--val-dataset",
        "shapes_ovd_val",
        "--output-dir",
        out,
        *RENORM,
    )
    epoch_line = re.compile(r"re-normalization epoch (\d+)/12: mean loss")
    # killed as epoch 2 starts (its image order drawn), once epoch 1's state is saved
    run_until_killpoint(
        killpoint_command(
            cmd[1].rsplit("/", 1)[1], "ezsd.offline.renormalization:epoch_order", "n == 2", *cmd[2:]
        ),
        env,
    )
    saved = torch.load(out / STATE_NAME, weights_only=True)["epoch"]
    assert saved == 1 and not (out / CHECKPOINT_NAME).exists()
    (out / f".tmp-deadbeef-{STATE_NAME}").write_bytes(b"half a state")  # killed while saving

    again = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming re-normalization after epoch {saved} " in again.stdout
    trained = [int(m) for m in epoch_line.findall(again.stdout)]
    assert trained == list(range(saved + 1, 13))  # no finished epoch trained twice
    assert _temp_files(out) == []

    ref_report = json.loads((reference / REPORT_NAME).read_text())
    report = json.loads((out / REPORT_NAME).read_text())
    for key in ("loss_per_epoch", "before", "after", "epochs_done", "tuned_parameters"):
        assert report[key] == ref_report[key], key
    a = torch.load(reference / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_train_net_killed_after_a_checkpoint_resumes_from_it(world):
    root, env = world
    out = root / "faults_train_killed"
    args = train_args(
        root,
        out,
        *FAST,
        "SOLVER.MAX_ITER",
        6,
        "SOLVER.STEPS",
        "(4,)",
        "SOLVER.CHECKPOINT_PERIOD",
        2,
    )
    # killed right after its first checkpoint is saved (the child waits there)
    run_until_killpoint(
        killpoint_command(
            "train_net.py", "fvcore.common.checkpoint:Checkpointer.save", "n == 1", *args
        ),
        env,
    )
    name = (out / "last_checkpoint").read_text().strip()
    iteration = int(re.fullmatch(r"model_(\d{7})\.pth", name).group(1))
    assert iteration == 1 and not (out / "model_final.pth").exists()
    assert torch.load(out / name, weights_only=False)["iteration"] == iteration  # complete file
    metrics = out / "metrics.json"
    lines_before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    log_before = len((out / "log.txt").read_text())

    resumed = subprocess.run(
        tool_command("train_net.py", "--resume", *args),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (out / "log.txt").read_text()[log_before:]  # this run's part of the appended log
    assert f"Loading trainer from {out / name}" in log  # its iteration, optimizer, scheduler
    assert f"Starting training from iteration {iteration + 1}" in log
    first = json.loads(metrics.read_text().splitlines()[lines_before])
    assert first["iteration"] > iteration >= 1  # metrics of this run: none from iteration 0
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 5 and (out / "last_checkpoint").read_text() == "model_final.pth"


# ---------------------------------------------------------------- read-only output folder


@pytest.fixture
def read_only(tmp_path):
    """A folder with files in it, made read-only (skips where that does not deny writing:
    root, or a file system that ignores the mode)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    for name, text in (
        ("log.txt", "an earlier run\n"),
        ("config.yaml", "x: 1\n"),
        ("manifest.json", "{}"),
        (REPORT_NAME, "{}"),
        ("text.npy", "old"),
    ):
        (folder / name).write_text(text)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("chmod 0o555 does not deny writing here (running as root?)")
    yield folder
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    folder.chmod(0o755)
    assert after == before  # nothing written, appended, replaced or added


def _one_line_error(capsys, call, path):
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and str(path) in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_precompute_into_read_only_folder(world, read_only, capsys):
    root, _ = world
    tool = precompute_cli
    argv = [
        "--dataset",
        TRAIN,
        "--clip",
        str(root / "clip.pt"),
        "--output",
        str(read_only),
        "--anchor-preset",
        "shapes",
        "--no-progress",
    ]
    _one_line_error(capsys, lambda: tool.main(argv), read_only)


def test_precompute_with_a_read_only_subfolder(world, tmp_path, capsys):
    """Writable --output, read-only regions/: the error names regions/, not a temp file."""
    root, _ = world
    regions = tmp_path / "store" / "regions"
    regions.mkdir(parents=True)
    regions.chmod(0o555)
    if os.access(regions, os.W_OK):
        regions.chmod(0o755)
        pytest.skip("chmod 0o555 does not deny writing here (running as root?)")
    tool = precompute_cli
    argv = [
        "--dataset",
        TRAIN,
        "--clip",
        str(root / "clip.pt"),
        "--output",
        str(regions.parent),
        "--anchor-stride",
        "32",
        "--anchor-sizes",
        "32,64",
        "--no-progress",
    ]
    try:
        _one_line_error(capsys, lambda: tool.main(argv), f"{regions}: Permission denied")
    finally:
        regions.chmod(0o755)
    assert list(regions.iterdir()) == [] and not (regions.parent / "manifest.json").exists()


def test_finetune_into_read_only_folder(world, read_only, capsys):
    root, _ = world
    tool = renormalization_cli
    argv = [
        "--clip",
        str(root / "clip.pt"),
        "--train-dataset",
        TRAIN,
        "--val-dataset",
        VAL,
        "--output-dir",
        str(read_only),
        "--epochs",
        "1",
        "--no-progress",
    ]
    _one_line_error(capsys, lambda: tool.main(argv), read_only)


def test_dump_text_embeddings_into_read_only_folder(world, read_only, capsys):
    root, _ = world
    tool = text_cli
    argv = [
        "--clip",
        str(root / "clip.pt"),
        "--names",
        "cat,dog",
        "--out",
        str(read_only / "text.npy"),
    ]
    _one_line_error(capsys, lambda: tool.main(argv), read_only)


def test_train_net_into_read_only_folder(world, read_only, capsys):
    root, _ = world
    argv = list(map(str, train_args(root, read_only, *FAST, "DATASETS.TRAIN", f"('{TRAIN}',)")))
    args = default_argument_parser().parse_args(argv)
    _one_line_error(capsys, lambda: launch_main(args), read_only)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("capsh"),
    reason="not root: the read-only tests above run as they are",
)
def test_permission_tests_also_run_as_root():
    """Root ignores a folder's mode, so as root (CI) the read-only tests above skip themselves;
    here they run in a pytest whose processes lack the permission-override capabilities."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rs",
        os.path.join(REPO, "tests", "test_faults.py"),
        "-k",
        "read_only",
    ]
    result = subprocess.run(
        [
            "capsh",
            "--drop=cap_dac_override,cap_dac_read_search",
            "--",
            "-c",
            " ".join(map(shlex.quote, command)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0 and "5 passed" in summary and "skipped" not in summary, (
        result.stdout[-3000:] + result.stderr[-2000:]
    )
