"""Mixed precision: EZSD's classifier and distillation paths under autocast (bfloat16 on CPU,
fp16 with detectron2's AMPTrainer on CUDA), and SOLVER.AMP.ENABLED through train_net's Trainer.

Where precision matters the predictor and the loss compute in float32 whatever autocast does:
T * cos with T ~ 100 in bfloat16 (8 significant bits) would be off by up to ~0.4 logits."""

import itertools

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import AMPTrainer, default_argument_parser
from detectron2.modeling import build_model
from test_predictor import _inputs, _predictor
from test_roi_heads import _batch, _cfg

from ezsd.data.datasets import register_ovd_dataset
from ezsd.data.shapes_ovd import CATEGORY_NAMES, DEFAULT_NOVEL_CLASSES
from ezsd.engine import CPUAMPTrainer, Trainer, build_train_loop, load_config
from ezsd.modeling import distillation_loss
from ezsd.offline import precompute_cli

from train_workspace import train_args

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_predictor_logits_are_float32_under_autocast():
    pred = _predictor().train()
    emb, reg = _inputs()
    gt = torch.tensor([0, 1, 2, 3, 1])
    ref_scores, ref_deltas = pred((emb, reg), gt)
    with torch.autocast(**BF16):
        scores, deltas = pred((emb.bfloat16(), reg), gt)  # a box head's bf16 output
    assert scores.dtype == torch.float32
    # Only the input's rounding to bfloat16 remains (|cos error| <= ~4e-3, times T = 100).
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0.5)
    with torch.autocast(**BF16):
        exact, _ = pred((emb, reg), gt)  # float32 input: float32 logits, bit for bit
    torch.testing.assert_close(exact, ref_scores, rtol=1e-6, atol=1e-5)
    assert torch.isfinite(deltas).all()


def test_distillation_loss_is_float32_for_low_precision_inputs():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=1)
    targets = torch.randn(6, 16, generator=g).half()  # stored targets are fp16
    weights = torch.rand(6, generator=g)
    ref = distillation_loss(emb.bfloat16().float(), targets.float(), weights, [4, 2])
    with torch.autocast(**BF16):
        loss = distillation_loss(emb.bfloat16(), targets, weights, [4, 2])
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


def test_training_step_under_bf16_autocast_has_finite_losses_and_gradients(tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path)).train()
    from detectron2.utils.events import EventStorage

    with EventStorage(), torch.autocast(**BF16):
        losses = model(_batch())
    assert {"loss_cls", "loss_box_reg", "loss_distill", "loss_rpn_cls"} <= set(losses)
    for name, value in losses.items():
        assert torch.isfinite(value), name
    assert losses["loss_cls"].dtype == losses["loss_distill"].dtype == torch.float32
    sum(losses.values()).backward()
    heads = model.roi_heads
    for name, p in (
        ("embed", heads.box_head.embed.weight),
        ("log_temperature", heads.box_predictor.log_temperature),
        ("bg_score", heads.box_predictor.bg_score.weight),
        ("bbox_pred", heads.box_predictor.bbox_pred.weight),
        ("backbone res5", model.backbone.bottom_up.res5[0].conv1.weight),
    ):
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def _train_loop(tmp_path, device):
    cfg = _cfg(tmp_path)
    cfg.MODEL.DEVICE = device
    cfg.SOLVER.AMP.ENABLED = True
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = _batch()
    return build_train_loop(cfg, model, itertools.repeat(batch), optimizer)


def test_amp_loop_on_cpu_is_bf16_and_trains(tmp_path):
    loop = _train_loop(tmp_path, "cpu")
    assert isinstance(loop, CPUAMPTrainer)
    loop.train(0, 4)
    totals = [v for v, _ in loop.storage.history("total_loss").values()]
    assert len(totals) == 4 and all(map(torch.isfinite, torch.tensor(totals)))
    assert totals[-1] < totals[0], totals


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_loop_on_cuda_is_detectron2_fp16_amptrainer(tmp_path):
    loop = _train_loop(tmp_path, "cuda")
    assert isinstance(loop, AMPTrainer) and loop.precision == torch.float16
    loop.train(0, 4)
    totals = [v for v, _ in loop.storage.history("total_loss").values()]
    assert len(totals) == 4 and all(map(torch.isfinite, torch.tensor(totals)))
    assert loop.grad_scaler.get_scale() > 0


def test_train_net_trainer_with_solver_amp_on_cpu(shapes_workspace, tmp_path):
    """SOLVER.AMP.ENABLED through ezsd.engine's Trainer on CPU: bfloat16, two iterations,
    a final checkpoint (in-process, on the shared workspace's images registered under a name,
    with region features pre-computed for that dataset: a store is bound to its dataset)."""
    root, _ = shapes_workspace
    name = "test_amp_shapes_train"
    if name not in DatasetCatalog.list():
        base = [c for c in CATEGORY_NAMES if c not in DEFAULT_NOVEL_CLASSES]
        data = root / "shapes_ovd"
        register_ovd_dataset(
            name,
            str(data / "train.json"),
            str(data / "train"),
            base,
            DEFAULT_NOVEL_CLASSES,
            thing_classes=base,
        )
    features = tmp_path / "features"
    precompute_cli.main(
        list(
            map(
                str,
                [
                    "--dataset",
                    name,
                    "--output",
                    features,
                    "--clip",
                    root / "clip.pt",
                    "--anchor-preset",
                    "shapes",
                    "--regions-per-image",
                    20,
                    "--no-progress",
                ],
            )
        )
    )
    argv = train_args(
        root,
        tmp_path / "amp",
        "SOLVER.AMP.ENABLED",
        True,
        "SOLVER.MAX_ITER",
        2,
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "MODEL.EZSD.DISTILL.FEATURES",
        features,
    )
    args = default_argument_parser().parse_args(list(map(str, argv)))
    cfg = load_config(args)
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, CPUAMPTrainer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "amp" / "model_final.pth").exists()
    history = trainer.storage.history("total_loss").values()
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in history)
