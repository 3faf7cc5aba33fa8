"""EZSD's trainer (a detectron2 DefaultTrainer) and the training entry points of tools/train_net.py.

`Trainer` overrides builders only: the data loader (EZSDDatasetMapper, which reads the CLIP
targets), the open-vocabulary evaluators and the optimizer (`build_optimizer`). `main(args)` and
`launch_main(args)` take detectron2's `default_argument_parser()` arguments.

The training loop follows MODEL.DEVICE. detectron2's `launch`, `create_ddp_model` and
`AMPTrainer` assume one GPU per process whenever a GPU is present: the process group is NCCL if
CUDA is available (a CPU model on a GPU machine
cannot communicate), DistributedDataParallel gets `device_ids=[local rank]` (refused for a CPU
model) and AMPTrainer asserts CUDA. Here the device decides:

    MODEL.DEVICE   process group   DDP device_ids   SOLVER.AMP.ENABLED
    cuda           nccl            [local rank]     detectron2's AMPTrainer (fp16 + GradScaler)
    cpu            gloo            None             CPUAMPTrainer (bfloat16 autocast, no scaler)
"""

import logging
import socket
import sys
import time
import weakref

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_setup,
)
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ezsd.checkpoint import load_weights, trained_checkpointables, weights_file
from ezsd.config import load_ezsd_config
from ezsd.data.mapper import EZSDDatasetMapper
from ezsd.evaluation import build_ovd_evaluator
from ezsd.modeling import temperature_scaled_parameters
from ezsd.utils.errors import UserInputError, exit_on_user_error
from ezsd.utils.file_io import check_writable_dir

__all__ = [
    "Trainer",
    "build_optimizer",
    "images_per_process",
    "load_config",
    "setup",
    "main",
    "launch_main",
    "launch",
    "build_ddp_model",
    "build_train_loop",
    "CPUAMPTrainer",
]

logger = logging.getLogger(__name__)


def _device_type(device):
    return torch.device(device).type


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func,
    num_processes,
    device,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """detectron2's `launch` with the process-group backend of `device` (gloo for CPU, nccl for
    CUDA); `num_processes` per machine. A worker that exits with an error (one line printed by
    `exit_on_user_error`, or a traceback) ends this process with its exit code, without a second
    traceback from torch.multiprocessing."""
    kind = _device_type(device)
    world_size = num_machines * num_processes
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            f"MODEL.DEVICE is '{device}' but CUDA is not available here "
            "(torch.cuda.is_available() is False); set MODEL.DEVICE cpu"
        )
    if kind == "cuda" and num_processes > torch.cuda.device_count():
        raise UserInputError(
            f"--num-gpus {num_processes} but only {torch.cuda.device_count()} "
            "CUDA devices are visible"
        )
    if world_size > 1 and kind not in ("cuda", "cpu"):
        raise UserInputError(f"MODEL.DEVICE '{device}': several processes run on 'cpu' or 'cuda'")
    try:
        if world_size == 1:
            return main_func(*args)
        if kind == "cuda":  # detectron2's own: NCCL, one GPU per process
            return d2_launch(
                main_func,
                num_processes,
                num_machines,
                machine_rank,
                dist_url,
                args=args,
                timeout=timeout,
            )
        if dist_url == "auto":
            if num_machines != 1:
                raise UserInputError("--dist-url auto works on one machine only")
            dist_url = f"tcp://127.0.0.1:{_free_port()}"
        mp.start_processes(
            _cpu_worker,
            nprocs=num_processes,
            daemon=False,
            args=(main_func, world_size, num_processes, machine_rank, dist_url, args, timeout),
        )
    except mp.ProcessExitedException as e:  # the worker said why (stderr) before exiting
        sys.exit(e.exit_code if e.exit_code and e.exit_code > 0 else 1)


def _cpu_worker(
    local_rank, main_func, world_size, num_processes, machine_rank, dist_url, args, timeout
):
    rank = machine_rank * num_processes + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    comm.create_local_process_group(num_processes)
    comm.synchronize()
    main_func(*args)


def build_ddp_model(model, **kwargs):
    """`create_ddp_model` that passes `device_ids` only for a CUDA model (None on CPU)."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


class CPUAMPTrainer(SimpleTrainer):
    """SimpleTrainer whose forward runs under `torch.autocast("cpu", dtype=torch.bfloat16)`.

    bfloat16 has float32's exponent range, so no gradient scaling is needed (unlike fp16 on
    CUDA); the parameters, gradients and optimizer stay float32."""

    def __init__(self, model, data_loader, optimizer, precision=torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(device_type="cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def build_train_loop(cfg, model, data_loader, optimizer):
    """The inner trainer of DefaultTrainer, by device: the model wrapped for data parallelism
    (when several processes), SimpleTrainer or, with SOLVER.AMP.ENABLED, mixed precision."""
    model = build_ddp_model(model, broadcast_buffers=False)
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    if _device_type(cfg.MODEL.DEVICE) == "cuda":
        return AMPTrainer(model, data_loader, optimizer)
    logger.info("SOLVER.AMP.ENABLED on CPU: bfloat16 autocast")
    return CPUAMPTrainer(model, data_loader, optimizer)


# ---- the trainer ---------------------------------------------------------------------------------


def images_per_process(cfg, num_processes):
    """SOLVER.IMS_PER_BATCH is the total over all training processes; each takes an equal part."""
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % num_processes:
        raise UserInputError(
            f"SOLVER.IMS_PER_BATCH {total} is not divisible by the "
            f"{num_processes} training processes"
        )
    return total // num_processes


def build_optimizer(cfg, model):
    """detectron2's parameter groups with SOLVER.OPTIMIZER (SGD or ADAMW): no weight decay on the
    classifier's learned temperature (it would pull log T towards T = 1), and
    MODEL.EZSD.TEMPERATURE_LR_FACTOR on the parameters whose gradient carries a factor T."""
    temperature_scaled = set(temperature_scaled_parameters(model))
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={"log_temperature": {"weight_decay": 0.0}},
        lr_factor_func=lambda name: (
            cfg.MODEL.EZSD.TEMPERATURE_LR_FACTOR if name in temperature_scaled else 1.0
        ),
    )
    kind = cfg.SOLVER.OPTIMIZER.upper()
    if kind == "SGD":
        optimizer_class, options = (
            torch.optim.SGD,
            dict(momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV),
        )
    elif kind == "ADAMW":
        optimizer_class, options = torch.optim.AdamW, {}
    else:
        raise UserInputError(f"SOLVER.OPTIMIZER '{cfg.SOLVER.OPTIMIZER}': use SGD or ADAMW")
    # maybe_add_gradient_clipping wraps the class, so it is applied before instantiation.
    return maybe_add_gradient_clipping(cfg, optimizer_class)(
        params, lr=cfg.SOLVER.BASE_LR, **options
    )


class Trainer(DefaultTrainer):
    """DefaultTrainer with EZSD's mapper (it loads the CLIP targets) and open-vocabulary
    evaluators."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with the inner loop built for MODEL.DEVICE (build_train_loop: DDP
        # without device ids on CPU, bfloat16 AMP on CPU); detectron2's assumes one GPU per process.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._trainer = build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            self._trainer.model,
            cfg.OUTPUT_DIR,
            trainer=weakref.proxy(self),
            **trained_checkpointables(cfg),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        world = comm.get_world_size()
        logger.info(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} = "
            f"{images_per_process(cfg, world)} per process x {world} processes"
        )
        return build_detection_train_loader(cfg, mapper=EZSDDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_ovd_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


# ---- entry points (args: detectron2's default_argument_parser()) --------------------------------


def load_config(args):
    """The frozen config of `args.config_file` + `args.opts` (ezsd.config.load_ezsd_config)."""
    cfg = load_ezsd_config(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_config(args)
    if (
        comm.is_main_process() and cfg.OUTPUT_DIR
    ):  # before default_setup writes log and config there
        check_writable_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ezsd")
    return cfg


@exit_on_user_error
def main(args):
    """Train (resuming with --resume) or, with --eval-only, evaluate MODEL.WEIGHTS (with
    --resume, OUTPUT_DIR's last checkpoint if there is one). Weights that do not fit the model
    are refused (`ezsd.checkpoint.load_weights`), not evaluated partly random."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        last = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if args.resume and last.has_checkpoint():
            weights = last.get_checkpoint_file()
        else:
            weights = weights_file(cfg, args.config_file, args.opts)
        return Trainer.test(cfg, load_weights(model, weights, cfg, args.config_file))
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
        main,
        args.num_gpus,
        cfg.MODEL.DEVICE,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
