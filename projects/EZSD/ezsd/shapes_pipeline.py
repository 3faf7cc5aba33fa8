"""Run EZSD end to end on ShapesOVD with the small CLIP, stage by stage, with the real tools.

    tools/run_pipeline.py --output-dir output/demo [--seed N] [--novel a,b,c] [--variant V]

Stages (each is skipped when its outputs exist and were made from the inputs asked for now, so an
interrupted run resumes; outputs made from other inputs are refused, naming both, never reused):
  data      datasets/prepare_shapes_ovd.py          -> DATA/shapes_ovd/
  renorm    tools/finetune_clip.py                  -> SHARED/renorm/clip_renormalized.pt
  text      tools/dump_text_embeddings.py           -> SHARED/text_{raw,renorm}/{train,test}.npy
  rpn       tools/train_net.py (an RPN-only model on the base boxes: the candidates of the
            'rpn' CLIP-proposal mode; only with --clip-proposals rpn) -> SHARED/rpn/model_final.pth
  features  tools/precompute_clip_features.py       -> SHARED/features_{raw,renorm}_{MODE}/
  train     tools/train_net.py (trains, then evaluates on val with base+novel names) -> OUT/train/
and writes OUT/results.json with the open-vocabulary AP figures, every input that decides them
(seed, split, image counts, iterations, variant, proposal mode, CLIPs, data digests, git commit)
and the time of every stage (null for a stage skipped because an earlier run made its outputs).
Every stage runs the same command a COCO user runs, with ShapesOVD settings; one training choice
is not the paper's: the novel names are wrong answers on base objects (--novel-negatives-inside;
0 is the paper's classification, as tools/run_ablation.py runs it). SHARED is OUT unless
--shared-dir is given: tools/run_ablation.py points all variants at one, so each stage output is
made once for the variants that share it.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from ezsd.config import config_digest, load_ezsd_config
from ezsd.data.shapes_ovd import DEFAULT_NOVEL_CLASSES
from ezsd.data.text_embedding_file import text_embedding_info
from ezsd.utils.checkout import REPO, checkout_path
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import atomic_write_json, file_sha256
from ezsd.utils.settings import settings_difference

__all__ = ["VARIANTS", "parse_args", "scaled_schedule", "Pipeline", "run_pipeline", "main"]

SMALL_CLIP = checkout_path("weights", "shapes_clip_vit.pt")
CONFIG = checkout_path("configs", "ShapesOVD", "ezsd_R_18_FPN_pretrained.yaml")
RPN_CONFIG = checkout_path("configs", "ShapesOVD", "rpn_R_18_FPN.yaml")
# RPN boxes per image that CLIP ranks (rpn mode). Few: the small CLIP's objectness ranks background
# above novel objects, so the fewer candidates it chooses among, the more of the distilled regions
# lie on novel objects (docs/SHAPES_RESULTS.md, "What the detector distills").
RPN_CANDIDATES = 50
# The novel names are wrong answers on proposals with this share of their area inside a base box.
NOVEL_NEGATIVES_INSIDE = 0.7
INPUTS_FILE = "pipeline_inputs.json"  # what a stage's outputs were made from (beside them)

# What each variant switches on; the paper's ablation read from top to bottom. `proposals` is the
# distilled regions: None (no distillation), "random" (regions not chosen by CLIP, as in ViLD) or
# "clip" (CLIP proposals, made with --clip-proposals).
VARIANTS = {
    "no_distill": dict(renorm=False, proposals=None, semantic_regression=False),
    "vild_like": dict(renorm=False, proposals="random", semantic_regression=False),
    "renorm": dict(renorm=True, proposals="random", semantic_regression=False),
    "renorm_clip_proposals": dict(renorm=True, proposals="clip", semantic_regression=False),
    "full": dict(renorm=True, proposals="clip", semantic_regression=True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--novel", default=",".join(DEFAULT_NOVEL_CLASSES), help="novel class names")
    p.add_argument("--variant", default="full", choices=sorted(VARIANTS))
    # rpn by default: of the regions the fast mode distills, almost none lie on a novel object
    # (docs/SHAPES_RESULTS.md, "What the detector distills"); the RPN stage costs CPU time.
    p.add_argument(
        "--clip-proposals",
        default="rpn",
        choices=("fast", "rpn", "exhaustive"),
        help="precompute --proposal-mode of the CLIP proposals (docs/PRECOMPUTE.md)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="DETECTRON2_DATASETS for this run (default SHARED_DIR/datasets)",
    )
    p.add_argument(
        "--shared-dir",
        default=None,
        help="where the stages before training write (default OUTPUT_DIR)",
    )
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument(
        "--renorm-epochs",
        type=int,
        default=1,
        help="longer tuning drifts base crops to novel names (docs/RENORMALIZATION.md)",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="training iterations (config default); LR steps and warm-up scale with it",
    )
    p.add_argument(
        "--rpn-max-iter",
        type=int,
        default=None,
        help="training iterations of the rpn stage (its config's default)",
    )
    p.add_argument(
        "--rpn-candidates",
        type=int,
        default=RPN_CANDIDATES,
        help="RPN boxes per image that CLIP ranks in the rpn proposal mode",
    )
    # Not the paper's: on ShapesOVD the novel names, never a wrong answer in the paper's training,
    # claim base objects and their parts (docs/SHAPES_RESULTS.md, "What outranks the novel
    # objects"). tools/run_ablation.py passes 0: its variants are the paper's.
    p.add_argument(
        "--novel-negatives-inside",
        type=float,
        default=NOVEL_NEGATIVES_INSIDE,
        help="MODEL.EZSD.NOVEL_NEGATIVES_INSIDE of the training (0 = the paper's classification)",
    )
    p.add_argument(
        "--eval-period",
        type=int,
        default=0,
        help="also evaluate every this many iterations (results.json 'curve')",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where every stage runs: cpu or cuda (CLIP tuning, features, training)",
    )
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="extra train_net.py config options, KEY VALUE ...",
    )
    args = p.parse_args(argv)
    if not 0 <= args.novel_negatives_inside <= 1:
        # refused now, not after the stages that precede training
        raise UserInputError(
            f"--novel-negatives-inside {args.novel_negatives_inside} is not in [0, 1]"
        )
    return args


def scaled_schedule(config_file, max_iter):
    """SOLVER options that train `max_iter` iterations with the config's schedule shape: its LR
    steps and warm-up at the same fractions of the run. Steps that round together or onto the
    last iteration are dropped (fvcore's scheduler needs distinct steps below MAX_ITER)."""
    solver = load_ezsd_config(config_file).SOLVER
    scale = max_iter / solver.MAX_ITER
    steps = sorted({round(step * scale) for step in solver.STEPS} & set(range(1, max_iter)))
    return [
        "SOLVER.MAX_ITER",
        max_iter,
        "SOLVER.STEPS",
        str(tuple(steps)),
        "SOLVER.WARMUP_ITERS",
        round(solver.WARMUP_ITERS * scale),
    ]


class Pipeline:
    """Runs the stages as subprocesses with DETECTRON2_DATASETS pointing at this run's data."""

    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.output_dir)
        self.shared = os.path.abspath(args.shared_dir or args.output_dir)
        self.data_root = os.path.abspath(args.data_dir or os.path.join(self.shared, "datasets"))
        self.variant = VARIANTS[args.variant]
        self.novel = [n.strip() for n in args.novel.split(",") if n.strip()]
        self.env = dict(os.environ, DETECTRON2_DATASETS=self.data_root)
        self.stage_seconds = {}
        self.clip_file = SMALL_CLIP
        self.clip_tag = "raw"  # which CLIP made the text embeddings and features: raw or renorm

    def run_tool(self, stage, script, *args):
        """Run one tool; its output goes to OUT/logs/STAGE.log. A failure ends the pipeline with
        the tool's own last line (its one-line error)."""
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        log_path = os.path.join(self.out, "logs", f"{stage}.log")
        command = [sys.executable, os.path.join(REPO, script), *map(str, args)]
        with open(log_path, "w") as log:
            code = subprocess.run(
                command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            ).returncode
        if code != 0:
            with open(log_path) as f:
                lines = [line.strip() for line in f if line.strip()]
            raise UserInputError(
                f"stage '{stage}' failed (exit {code}): {lines[-1] if lines else 'no output'} "
                f"[full log: {log_path}]"
            )

    def stage(self, name, done, run, folder=None, inputs=None):
        """Run stage `name` unless `done()`. With `folder` and `inputs`, the stage's outputs there
        count as done only if FOLDER/pipeline_inputs.json records the same inputs; other recorded
        inputs are refused (one line naming the folder and both values of each difference)."""
        start = time.time()
        if done() and (inputs is None or self._same_inputs(name, folder, inputs)):
            print(f"[ezsd pipeline] {name}: already done, skipped", flush=True)
            # not run now: its cost is the earlier run's (its log), not 0
            self.stage_seconds[name] = None
            return
        print(f"[ezsd pipeline] {name}: running ...", flush=True)
        run()
        if inputs is not None:
            atomic_write_json(os.path.join(folder, INPUTS_FILE), inputs, indent=1)
        print(f"[ezsd pipeline] {name}: done in {time.time() - start:.0f} s", flush=True)
        self.stage_seconds[name] = round(time.time() - start, 1)

    @staticmethod
    def _same_inputs(name, folder, inputs):
        path = os.path.join(folder, INPUTS_FILE)
        if not os.path.exists(path):
            raise UserInputError(
                f"stage '{name}': {folder} holds outputs without a record of their inputs "
                f"({path}); "
                "delete it or choose another --output-dir/--shared-dir"
            )
        with open(path) as f:
            recorded = json.load(f)
        inputs = json.loads(json.dumps(inputs))  # as stored (tuples become lists)
        diff = settings_difference(recorded, inputs)
        if diff:
            raise UserInputError(
                f"stage '{name}': {folder} was made from other inputs ({diff}); "
                "delete it or choose another --output-dir/--shared-dir"
            )
        return True

    def data_inputs(self):
        """What the data folder holds, read from its files: seed, novel classes, image counts."""
        folder = os.path.join(self.data_root, "shapes_ovd")
        counts = {}
        for split in ("train", "val"):
            with open(os.path.join(folder, f"{split}.json")) as f:
                data = json.load(f)
            counts[split] = len(data["images"])
        info = data["info"]
        return dict(
            seed=info["seed"],
            novel=sorted(info["novel_classes"]),
            num_train=counts["train"],
            num_val=counts["val"],
        )

    def asked_data_inputs(self):
        return dict(
            seed=self.args.seed,
            novel=sorted(self.novel),
            num_train=self.args.num_train,
            num_val=self.args.num_val,
        )

    def data(self):
        folder = os.path.join(self.data_root, "shapes_ovd")

        def done():
            if not os.path.exists(os.path.join(folder, "split.json")):
                return False
            diff = settings_difference(self.data_inputs(), self.asked_data_inputs())
            if diff:
                raise UserInputError(
                    f"{folder}: holds other ShapesOVD data than asked ({diff}); choose another "
                    "--data-dir (or --shared-dir) for these settings"
                )
            return True

        self.stage(
            "data",
            done,
            lambda: self.run_tool(
                "data",
                "datasets/prepare_shapes_ovd.py",
                "--out",
                folder,
                "--seed",
                self.args.seed,
                "--num-train",
                self.args.num_train,
                "--num-val",
                self.args.num_val,
                "--novel",
                ",".join(self.novel),
            ),
        )

    def renorm(self):
        if not self.variant["renorm"]:
            return
        folder = os.path.join(self.shared, "renorm")
        renormalized = os.path.join(folder, "clip_renormalized.pt")
        inputs = dict(
            self.asked_data_inputs(), clip=_sha256(SMALL_CLIP), epochs=self.args.renorm_epochs
        )
        self.stage(
            "renorm",
            lambda: os.path.exists(renormalized),
            lambda: self.run_tool(
                "renorm",
                "tools/finetune_clip.py",
                "--clip",
                SMALL_CLIP,
                "--train-dataset",
                "shapes_ovd_train",
                "--val-dataset",
                "shapes_ovd_val",
                "--output-dir",
                folder,
                "--epochs",
                self.args.renorm_epochs,
                "--device",
                self.args.device,
                "--no-progress",
            ),
            folder,
            inputs,
        )
        self.clip_file, self.clip_tag = renormalized, "renorm"

    def text(self):
        folder = os.path.join(self.shared, f"text_{self.clip_tag}")
        self.text_files = {s: os.path.join(folder, f"{s}.npy") for s in ("train", "test")}

        def run():
            for split, dataset in (("train", "shapes_ovd_train"), ("test", "shapes_ovd_val")):
                self.run_tool(
                    "text",
                    "tools/dump_text_embeddings.py",
                    "--clip",
                    self.clip_file,
                    "--dataset",
                    dataset,
                    "--out",
                    self.text_files[split],
                    "--device",
                    self.args.device,
                )

        def done():
            """Made by this CLIP for this split: otherwise made again (cheap)."""
            if not all(map(os.path.exists, self.text_files.values())):
                return False
            info = text_embedding_info(self.text_files["train"])
            return info["clip_hash"] == _sha256(self.clip_file) and sorted(info["names"]) == sorted(
                self._base_classes()
            )

        self.stage("text", done, run)

    @property
    def proposal_mode(self):
        mode = self.variant["proposals"]
        return self.args.clip_proposals if mode == "clip" else mode

    def rpn(self):
        if self.proposal_mode != "rpn":
            return
        folder = os.path.join(self.shared, "rpn")
        self.rpn_weights = os.path.join(folder, "model_final.pth")
        opts = ["OUTPUT_DIR", folder, "MODEL.DEVICE", self.args.device, "SEED", self.args.seed]
        if self.args.rpn_max_iter:
            opts += scaled_schedule(RPN_CONFIG, self.args.rpn_max_iter)
        inputs = dict(
            self.asked_data_inputs(),
            opts=[str(o) for o in opts],
            config=_config_digest(RPN_CONFIG, opts),
        )
        self.stage(
            "rpn",
            lambda: os.path.exists(self.rpn_weights),
            lambda: self.run_tool(
                "rpn",
                "tools/train_net.py",
                "--config-file",
                RPN_CONFIG,
                "--resume",
                *opts,
            ),
            folder,
            inputs,
        )

    def features(self):
        mode = self.proposal_mode
        self.feature_dir = os.path.join(self.shared, f"features_{self.clip_tag}_{mode}")
        if mode is None:
            return
        # The detector distills regions sampled from the first NUM_PROPOSALS stored per image
        # (the config's, or --opts'): storing more would be CLIP work that no training step reads.
        regions = load_ezsd_config(
            CONFIG, self.args.opts, "--opts"
        ).MODEL.EZSD.DISTILL.NUM_PROPOSALS
        extra = ["--regions-per-image", regions]
        inputs = dict(
            self.asked_data_inputs(),
            clip=_sha256(self.clip_file),
            mode=mode,
            regions=regions,
            rpn=None,
        )
        if mode == "rpn":
            extra += [
                "--rpn-config",
                RPN_CONFIG,
                "--rpn-weights",
                self.rpn_weights,
                "--rpn-candidates",
                self.args.rpn_candidates,
            ]
            inputs.update(rpn=_sha256(self.rpn_weights), rpn_candidates=self.args.rpn_candidates)
        self.stage(
            "features",
            lambda: os.path.exists(os.path.join(self.feature_dir, "manifest.json")),
            lambda: self.run_tool(
                "features",
                "tools/precompute_clip_features.py",
                "--dataset",
                "shapes_ovd_train",
                "--output",
                self.feature_dir,
                "--clip",
                self.clip_file,
                "--anchor-preset",
                "shapes",
                "--proposal-mode",
                mode,
                "--device",
                self.args.device,
                "--no-progress",
                *extra,
            ),
            self.feature_dir,
            inputs,
        )

    def train(self):
        train_dir = os.path.join(self.out, "train")
        self.metrics_file = os.path.join(
            train_dir, "inference", "shapes_ovd_val", "ovd_metrics.json"
        )
        distill = self.variant["proposals"] is not None
        opts = [
            "OUTPUT_DIR",
            train_dir,
            "MODEL.DEVICE",
            self.args.device,
            "SEED",
            self.args.seed,
            "MODEL.EZSD.CLIP.MODEL",
            self.clip_file,
            "MODEL.EZSD.TEXT_EMBEDDINGS",
            self.text_files["train"],
            "MODEL.EZSD.TEST_TEXT_EMBEDDINGS",
            self.text_files["test"],
            "MODEL.ROI_HEADS.NUM_CLASSES",
            len(self._base_classes()),
            "MODEL.EZSD.DISTILL.ENABLED",
            distill,
            "MODEL.EZSD.DISTILL.FEATURES",
            self.feature_dir if distill else "",
            "MODEL.EZSD.SEMANTIC_REGRESSION",
            self.variant["semantic_regression"],
            "MODEL.EZSD.NOVEL_NEGATIVES_INSIDE",
            self.args.novel_negatives_inside,
        ]
        if self.args.max_iter:
            opts += scaled_schedule(CONFIG, self.args.max_iter)
        if self.args.eval_period:
            opts += ["TEST.EVAL_PERIOD", self.args.eval_period]
        self.train_opts = [str(o) for o in [*opts, *self.args.opts]]
        inputs = dict(
            self.asked_data_inputs(),
            variant=self.args.variant,
            opts=self.train_opts,
            config=_config_digest(CONFIG, self.train_opts),
            text=[_sha256(f) for f in self.text_files.values()],
            features=self._features_digest() if distill else None,
        )
        self.stage(
            "train",
            lambda: os.path.exists(self.metrics_file),
            lambda: self.run_tool(
                "train",
                "tools/train_net.py",
                "--config-file",
                CONFIG,
                "--resume",
                *self.train_opts,
            ),
            train_dir,
            inputs,
        )

    def _features_digest(self):
        """The feature store's manifest digest: a store made again is another input."""
        path = os.path.join(self.feature_dir, "manifest.json")
        return _sha256(path)

    def _base_classes(self):
        with open(os.path.join(self.data_root, "shapes_ovd", "split.json")) as f:
            return json.load(f)["base"]

    def _curve(self):
        """[iteration, AP50_base, AP50_novel] of every evaluation during training (detectron2's
        EvalHook logs them to metrics.json), the final one included."""
        with open(os.path.join(self.out, "train", "metrics.json")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        # A periodic evaluation is logged at iteration k-1 after k iterations, the final one (run
        # after the loop) at MAX_ITER: clamp to the iterations trained.
        trained = max((r["iteration"] + 1 for r in rows if "total_loss" in r), default=0)
        return [
            [
                min(r["iteration"] + 1, trained),
                round(r["bbox/AP50_base"], 2),
                round(r["bbox/AP50_novel"], 2),
            ]
            for r in rows
            if "bbox/AP50_novel" in r
        ]

    def results(self, started):
        with open(self.metrics_file) as f:
            bbox = json.load(f)["bbox"]
        results = {
            key: round(bbox[key], 2)
            for key in ("AP50_base", "AP50_novel", "AP50_all", "AP_base", "AP_novel", "AP_all")
        }
        trained = load_ezsd_config(os.path.join(self.out, "train", "config.yaml"))
        solver = trained.SOLVER
        data = self.data_inputs()
        results.update(
            variant=self.args.variant,
            seed=data["seed"],
            novel_classes=data["novel"],
            num_train=data["num_train"],
            num_val=data["num_val"],
            split="shapes_ovd_val",
            max_iter=solver.MAX_ITER,
            ims_per_batch=solver.IMS_PER_BATCH,
            proposal_mode=self.proposal_mode,
            rpn_candidates=self.args.rpn_candidates if self.proposal_mode == "rpn" else None,
            renorm_epochs=self.args.renorm_epochs if self.variant["renorm"] else None,
            novel_negatives_inside=trained.MODEL.EZSD.NOVEL_NEGATIVES_INSIDE,
            clip=_sha256(self.clip_file),
            train_opts=self.train_opts,
            device=self.args.device,
            git_commit=_git_commit(),
            stage_seconds=self.stage_seconds,
            wall_seconds=round(time.time() - started, 1),
            curve=self._curve(),
        )
        atomic_write_json(os.path.join(self.out, "results.json"), results, indent=1)
        return results


def _sha256(path):
    """file_sha256 of `path`, None while it does not exist (an output of a stage not run yet)."""
    return file_sha256(path) if path and os.path.exists(path) else None


def _config_digest(config_file, opts):
    """The config a training stage runs with, as "FILE DIGEST" (`config_digest`): a model trained
    before the config files or the EZSD keys changed is refused, not reused."""
    return f"{os.path.relpath(config_file, REPO)} {config_digest(config_file, opts, '--opts')}"


def _git_commit():
    """HEAD of this checkout, "+dirty" when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_pipeline(args):
    """Run every stage of `args` (parse_args) in order, each skipped when already done from the
    same inputs; write OUTPUT_DIR/results.json and return its contents."""
    started = time.time()
    pipeline = Pipeline(args)
    steps = (
        pipeline.data,
        pipeline.renorm,
        pipeline.text,
        pipeline.rpn,
        pipeline.features,
        pipeline.train,
    )
    for step in steps:
        step()
    return pipeline.results(started)


@exit_on_user_error
def main(argv=None):
    """The command line: parse_args(argv), run_pipeline, print results.json."""
    results = run_pipeline(parse_args(argv))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
