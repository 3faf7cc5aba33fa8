#!/usr/bin/env python
"""Train and evaluate an EZSD detector.

    tools/train_net.py --config-file configs/ShapesOVD/ezsd_R_18_FPN.yaml
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --num-gpus 8            # multi-GPU through launch
"""
import os

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger

import ezsd  # noqa: F401  (registers the datasets and model components)
from ezsd import add_ezsd_config
from ezsd.data.mapper import EZSDDatasetMapper
from ezsd.evaluation import build_ovd_evaluator
from ezsd.utils.errors import UserInputError, exit_on_user_error


class Trainer(DefaultTrainer):
    """DefaultTrainer with EZSD's mapper (it loads the CLIP targets) and open-vocabulary evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=EZSDDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_ovd_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # Weight decay would pull the classifier's learned temperature (log T) towards T = 1.
        params = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM, bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            overrides={"log_temperature": {"weight_decay": 0.0}},
        )  # fmt: skip
        optimizer = torch.optim.SGD(
            params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
        )
        return maybe_add_gradient_clipping(cfg, optimizer)


def setup(args):
    cfg = get_cfg()
    add_ezsd_config(cfg)
    if not os.path.isfile(args.config_file):
        raise UserInputError(f"config file not found: {args.config_file}")
    # yacs raises KeyError (unknown key), ValueError or AssertionError (bad value or type).
    try:
        cfg.merge_from_file(args.config_file)
    except (KeyError, ValueError, AssertionError) as e:
        raise UserInputError(f"{args.config_file}: {e}".replace("\n", " ")) from None
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise UserInputError(f"command-line option: {e}".replace("\n", " ")) from None
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ezsd")
    return cfg


@exit_on_user_error
def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,),
    )  # fmt: skip
