#!/usr/bin/env python
"""Train and evaluate an EZSD detector.

    tools/train_net.py --config-file configs/ShapesOVD/ezsd_R_18_FPN.yaml
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --num-gpus 8            # multi-GPU through launch
    tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (gloo)
"""
import logging
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, default_argument_parser, default_setup
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger

import ezsd  # noqa: F401  (registers the datasets and model components)
from ezsd.config import load_ezsd_config
from ezsd.data.mapper import EZSDDatasetMapper
from ezsd.engine import build_train_loop, launch
from ezsd.evaluation import build_ovd_evaluator
from ezsd.modeling import temperature_scaled_parameters
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import check_writable_dir

logger = logging.getLogger("ezsd.train_net")


def images_per_process(cfg, num_processes):
    """SOLVER.IMS_PER_BATCH is the total over all training processes; each takes an equal part."""
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % num_processes:
        raise UserInputError(f"SOLVER.IMS_PER_BATCH {total} is not divisible by the "
                             f"{num_processes} training processes")  # fmt: skip
    return total // num_processes


class Trainer(DefaultTrainer):
    """DefaultTrainer with EZSD's mapper (it loads the CLIP targets) and open-vocabulary evaluators."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with the inner loop built for MODEL.DEVICE (ezsd.engine: DDP
        # without device ids on CPU, bfloat16 AMP on CPU); detectron2's assumes one GPU per process.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._trainer = build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(self._trainer.model, cfg.OUTPUT_DIR,
                                                  trainer=weakref.proxy(self))  # fmt: skip
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        world = comm.get_world_size()
        logger.info(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} = "
                    f"{images_per_process(cfg, world)} per process x {world} processes")  # fmt: skip
        return build_detection_train_loader(cfg, mapper=EZSDDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_ovd_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # Weight decay would pull the classifier's learned temperature (log T) towards T = 1.
        temperature_scaled = set(temperature_scaled_parameters(model))
        params = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM, bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            overrides={"log_temperature": {"weight_decay": 0.0}},
            lr_factor_func=lambda name: (cfg.MODEL.EZSD.TEMPERATURE_LR_FACTOR
                                         if name in temperature_scaled else 1.0),
        )  # fmt: skip
        kind = cfg.SOLVER.OPTIMIZER.upper()
        if kind == "SGD":
            optimizer_class, options = torch.optim.SGD, dict(
                momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
            )
        elif kind == "ADAMW":
            optimizer_class, options = torch.optim.AdamW, {}
        else:
            raise UserInputError(f"SOLVER.OPTIMIZER '{cfg.SOLVER.OPTIMIZER}': use SGD or ADAMW")
        # maybe_add_gradient_clipping wraps the class, so it is applied before instantiation.
        return maybe_add_gradient_clipping(cfg, optimizer_class)(
            params, lr=cfg.SOLVER.BASE_LR, **options
        )


def load_config(args):
    cfg = load_ezsd_config(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_config(args)
    if comm.is_main_process() and cfg.OUTPUT_DIR:  # before default_setup writes log and config there
        check_writable_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
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


@exit_on_user_error
def launch_main(args):
    """`main` in --num-gpus processes per machine, on MODEL.DEVICE (gloo on CPU, nccl on CUDA)."""
    cfg = load_config(args)
    # Refused here, once, rather than in every process.
    if not args.eval_only:
        images_per_process(cfg, args.num_gpus * args.num_machines)
    if args.machine_rank == 0 and cfg.OUTPUT_DIR:
        check_writable_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    launch(
        main, args.num_gpus, cfg.MODEL.DEVICE, num_machines=args.num_machines,
        machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,),
    )  # fmt: skip


if __name__ == "__main__":
    launch_main(default_argument_parser().parse_args())
