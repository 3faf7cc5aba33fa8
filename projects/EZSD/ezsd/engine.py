"""Training-loop pieces that follow MODEL.DEVICE, for tools/train_net.py.

detectron2's `launch`, `create_ddp_model` and `AMPTrainer` assume one GPU per process whenever a
GPU is present: the process group is NCCL if CUDA is available (a CPU model on a GPU machine
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

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import AMPTrainer, SimpleTrainer, create_ddp_model
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

from ezsd.utils.errors import UserInputError

__all__ = ["launch", "build_ddp_model", "build_train_loop", "CPUAMPTrainer"]

logger = logging.getLogger(__name__)


def _device_type(device):
    return torch.device(device).type


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(main_func, num_processes, device, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):  # fmt: skip
    """detectron2's `launch` with the process-group backend of `device` (gloo for CPU, nccl for
    CUDA); `num_processes` per machine. A worker that exits with an error (one line printed by
    `exit_on_user_error`, or a traceback) ends this process with its exit code, without a second
    traceback from torch.multiprocessing."""
    kind = _device_type(device)
    world_size = num_machines * num_processes
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"MODEL.DEVICE is '{device}' but CUDA is not available here "
                             "(torch.cuda.is_available() is False); set MODEL.DEVICE cpu")  # fmt: skip
    if kind == "cuda" and num_processes > torch.cuda.device_count():
        raise UserInputError(f"--num-gpus {num_processes} but only {torch.cuda.device_count()} "
                             "CUDA devices are visible")  # fmt: skip
    if world_size > 1 and kind not in ("cuda", "cpu"):
        raise UserInputError(f"MODEL.DEVICE '{device}': several processes run on 'cpu' or 'cuda'")
    try:
        if world_size == 1:
            return main_func(*args)
        if kind == "cuda":  # detectron2's own: NCCL, one GPU per process
            return d2_launch(main_func, num_processes, num_machines, machine_rank, dist_url,
                             args=args, timeout=timeout)  # fmt: skip
        if dist_url == "auto":
            if num_machines != 1:
                raise UserInputError("--dist-url auto works on one machine only")
            dist_url = f"tcp://127.0.0.1:{_free_port()}"
        mp.start_processes(
            _cpu_worker, nprocs=num_processes, daemon=False,
            args=(main_func, world_size, num_processes, machine_rank, dist_url, args, timeout),
        )  # fmt: skip
    except mp.ProcessExitedException as e:  # the worker said why (stderr) before exiting
        sys.exit(e.exit_code if e.exit_code and e.exit_code > 0 else 1)


def _cpu_worker(local_rank, main_func, world_size, num_processes, machine_rank, dist_url, args,
                timeout):  # fmt: skip
    rank = machine_rank * num_processes + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=rank, timeout=timeout)  # fmt: skip
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
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
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
