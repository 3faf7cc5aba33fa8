"""A tiny EZSDRCNN (ResNet-18 FPN with BN, 64-96 px images) on CPU: ROI heads, distillation,
training steps, inference, vocabulary by config and by method, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_ioa, pairwise_iou
from detectron2.utils.events import EventStorage

from ezsd import add_ezsd_config
from ezsd.data.text_embedding_file import save_text_embeddings
from ezsd.modeling import EZSDRCNN, EZSDROIHeads
from ezsd.modeling.not_background import drop_object_like_background
from ezsd.utils.errors import UserInputError

D = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convs on a shared 2-core machine run many times faster on one thread than with OpenMP
    threads contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BASE = ["lemon", "brick", "lime"]
ALL = BASE + ["kiwi", "plum"]


def _vocab(path, names, seed=0):
    g = torch.Generator().manual_seed(seed)
    save_text_embeddings(
        str(path), F.normalize(torch.randn(len(names), D, generator=g), dim=1).numpy(), names
    )
    return str(path)


def _cfg(tmp_path, **overrides):
    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "EZSDRCNN"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FPN.NORM = "BN"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 30
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.NAME = "EZSDROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(BASE)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_BOX_HEAD.NAME = "EZSDBoxHead"
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 5
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.NORM = "GN"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.EZSD.EMBED_DIM = D
    cfg.MODEL.EZSD.TEXT_EMBEDDINGS = _vocab(tmp_path / "base.npy", BASE)
    cfg.MODEL.EZSD.DISTILL.NUM_PROPOSALS = 4
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _batch(with_distill=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for h, w in ((64, 96), (80, 64)):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]]))
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = BitMasks(torch.rand(2, h, w, generator=g) > 0.5)
        x = {
            "image": torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8),
            "instances": inst,
            "height": h,
            "width": w,
        }
        if with_distill:
            k = 5
            xy = torch.rand(k, 2, generator=g) * 30
            x["distill_regions"] = Instances(
                (h, w),
                boxes=Boxes(torch.cat([xy, xy + 10 + torch.rand(k, 2, generator=g) * 20], 1)),
                targets=torch.randn(k, D, generator=g).half(),
                weights=torch.rand(k, generator=g),
                is_gt=torch.arange(k) < 2,
            )
        inputs.append(x)
    return inputs


def test_training_step_with_distillation_and_inference(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(
        tmp_path,
        **{
            "MODEL.EZSD.TEST_TEXT_EMBEDDINGS": _vocab(tmp_path / "all.npy", ALL, 1),
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
        },  # the paper's: every image has detections
    )
    model = build_model(cfg)
    assert isinstance(model, EZSDRCNN) and isinstance(model.roi_heads, EZSDROIHeads)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = _batch()
    totals = []
    with EventStorage():
        for _ in range(4):
            losses = model(batch)
            assert {"loss_cls", "loss_box_reg", "loss_distill", "loss_rpn_cls"} <= set(losses)
            assert all(torch.isfinite(v) for v in losses.values())
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            totals.append(total.item())
    assert totals[-1] < totals[0], totals
    assert model.roi_heads.num_classes == 3

    model.eval()
    assert model.roi_heads.num_classes == 5 and model.class_names == ALL
    with torch.no_grad():
        outputs = model([{k: x[k] for k in ("image", "height", "width")} for x in _batch(False)])
    assert len(outputs) == 2
    for out in outputs:
        inst = out["instances"]
        assert inst.pred_boxes.tensor.shape[1] == 4 and len(inst) == 20  # TEST.DETECTIONS_PER_IMAGE
        assert 0 <= inst.pred_classes.min() and inst.pred_classes.max() < 5
        assert len(set(inst.pred_classes.tolist())) > 1 and torch.isfinite(inst.scores).all()

    # vocabulary by method: no rebuild, the buffer kept, predictions follow
    model.set_vocabulary(F.normalize(torch.randn(2, D), dim=1), ["x", "y"])
    assert model.roi_heads.num_classes == 2
    with torch.no_grad():
        out = model([{"image": batch[0]["image"]}])[0]["instances"]
    assert len(out) == 20 and set(out.pred_classes.tolist()) == {0, 1}


def test_distillation_switch_and_missing_regions(tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path))
    model.train()
    with EventStorage():
        with pytest.raises(ValueError, match="distill_regions"):
            model(_batch(with_distill=False))
        batch = _batch()
        del batch[1]["distill_regions"]  # an image trained without distillation (skipped features)
        losses = model(batch)
        assert torch.isfinite(losses["loss_distill"])
        losses["loss_distill"].backward()

    model = build_model(
        _cfg(
            tmp_path,
            **{"MODEL.EZSD.DISTILL.ENABLED": False, "MODEL.EZSD.SEMANTIC_REGRESSION": False},
        )
    )
    model.train()
    with EventStorage():
        losses = model(_batch(with_distill=False))
    assert "loss_distill" not in losses and all(torch.isfinite(v) for v in losses.values())


def _loss_by_hand(model, batch, factor):
    """EZSD's distillation loss computed outside the ROI heads: every distillation row pooled and
    embedded, L1 to the normalised targets, weights normalised per image, times factor * D.
    Returns (images, features, regions, pooled level features, loss)."""
    heads = model.roi_heads
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    regions = [x["distill_regions"] for x in batch]
    feats = [features[f] for f in heads.box_in_features]
    emb, _ = heads.box_head(heads.box_pooler(feats, [r.boxes for r in regions]))
    targets = F.normalize(torch.cat([r.targets for r in regions]).float(), dim=1)
    w = torch.cat([r.weights / r.weights.mean() for r in regions])
    loss = factor * D * ((emb - targets).abs() * w[:, None]).mean()
    return images, features, regions, feats, loss


def _gt_proposals(batch):
    """Each image's GT boxes as its proposals."""
    return [
        Instances(
            x["instances"].image_size,
            proposal_boxes=x["instances"].gt_boxes,
            objectness_logits=torch.zeros(len(x["instances"])),
        )
        for x in batch
    ]


def test_distillation_loss_uses_region_embeddings_of_distill_boxes(tmp_path):
    """The distillation loss is EZSD's formula applied to the box head's embeddings of exactly
    the distillation boxes (pooled from the same features as the proposals)."""
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path, **{"MODEL.EZSD.DISTILL.WEIGHT": 0.5}))
    model.train()
    batch = _batch()
    heads = model.roi_heads
    with EventStorage():
        images, features, regions, _, expected = _loss_by_hand(model, batch, factor=0.5)
        _, losses = heads(
            images, features, _gt_proposals(batch), [x["instances"] for x in batch], regions
        )
    torch.testing.assert_close(losses["loss_distill"], expected, rtol=1e-4, atol=1e-5)


def test_mask_head_and_bad_config(tmp_path):
    torch.manual_seed(0)
    model = build_model(
        _cfg(tmp_path, **{"MODEL.MASK_ON": True, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    )
    model.train()
    with EventStorage():
        losses = model(_batch())
    assert torch.isfinite(losses["loss_mask"])
    model.eval()
    with torch.no_grad():
        out = model([{"image": _batch(False)[0]["image"]}])[0]["instances"]
    assert len(out) == 20 and out.pred_masks.shape == (20, 64, 96)

    with pytest.raises(UserInputError, match="CLS_AGNOSTIC_MASK"):
        build_model(
            _cfg(
                tmp_path, **{"MODEL.MASK_ON": True, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False}
            )
        )
    with pytest.raises(UserInputError, match="NUM_CLASSES"):
        build_model(_cfg(tmp_path, **{"MODEL.ROI_HEADS.NUM_CLASSES": 4}))
    with pytest.raises(
        UserInputError, match=r"base\.npy: .* dimension 16, but MODEL.EZSD.EMBED_DIM is 8"
    ):
        build_model(_cfg(tmp_path, **{"MODEL.EZSD.EMBED_DIM": 8}))
    # names checked against the training dataset's classes
    MetadataCatalog.get("ezsd_test_toy_train").set(thing_classes=["lemon", "lime", "brick"])
    with pytest.raises(UserInputError, match="class 1 is 'brick' but 'lime' is expected"):
        build_model(_cfg(tmp_path, **{"DATASETS.TRAIN": ("ezsd_test_toy_train",)}))


def test_mapper_outputs_train_the_model(tmp_path):
    """EZSDDatasetMapper's dicts (regions moved by resize + flip) feed EZSDRCNN's training step."""
    from detectron2.data import transforms as T
    from detectron2.structures import BoxMode
    from PIL import Image

    from ezsd.data.feature_store import write_image_regions, write_manifest
    from ezsd.data.mapper import EZSDDatasetMapper

    rng = np.random.default_rng(0)
    boxes = np.array(
        [[4, 4, 30, 40], [20, 10, 60, 44], [0, 0, 20, 20], [30, 5, 62, 30]], np.float32
    )
    write_image_regions(
        str(tmp_path / "feats"),
        7,
        boxes=boxes,
        embeddings=rng.normal(size=(4, D)),
        confidence=[1, 1, 0.5, 0.8],
        clip_class=[0, 1, 3, 4],
        objectness=[0, 0, 0.9, 0.5],
        is_gt=[True, True, False, False],
    )
    write_manifest(str(tmp_path / "feats"), "abc", ALL, BASE, {}, {7: 4})
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    annos = [
        {"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
        for b, c in zip(boxes[:2], (0, 2))
    ]
    mapper = EZSDDatasetMapper(
        True,
        augmentations=[T.Resize((72, 96)), T.RandomFlip(prob=1.0)],
        image_format="BGR",
        feature_store=str(tmp_path / "feats"),
        num_distill_proposals=3,
    )
    record = {"file_name": str(tmp_path / "a.png"), "image_id": 7, "height": 48, "width": 64}
    batch = [mapper(dict(record, annotations=annos)) for _ in range(2)]
    assert len(batch[0]["distill_regions"]) == 5
    model = build_model(_cfg(tmp_path)).train()
    with EventStorage():
        losses = model(batch)
    assert losses["loss_distill"] > 0 and all(torch.isfinite(v) for v in losses.values())


def test_repeated_distillation_boxes_are_embedded_once_with_the_same_loss_and_gradients(tmp_path):
    """Proposals are sampled with replacement; the ROI heads pool and embed each distinct box of
    an image once and gather: the loss and its gradients are those of embedding every row."""
    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path)).train()
    heads = model.roi_heads
    batch = _batch()
    rows = torch.tensor([0, 1, 2, 2, 3, 3, 3, 4, 2])
    for x in batch:
        r = x["distill_regions"]
        x["distill_regions"] = Instances(
            r.image_size,
            boxes=Boxes(r.boxes.tensor[rows]),
            targets=r.targets[rows],
            weights=r.weights[rows],
            is_gt=r.is_gt[rows],
        )
    pooled = []
    heads.box_pooler.register_forward_hook(lambda m, i, o: pooled.append(o.shape[0]))
    params = [p for n, p in heads.box_head.named_parameters() if not n.startswith("reg_branch")]
    with EventStorage():
        images, features, regions, feats, expected = _loss_by_hand(model, batch, factor=1.0)
        expected_grads = torch.autograd.grad(
            expected, params + feats, retain_graph=True, allow_unused=True
        )
        pooled.clear()
        _, losses = heads(
            images, features, _gt_proposals(batch), [x["instances"] for x in batch], regions
        )
        grads = torch.autograd.grad(losses["loss_distill"], params + feats, allow_unused=True)
    assert pooled[1:] == [2 * 5]  # after the proposals: 5 distinct distillation boxes per image
    torch.testing.assert_close(losses["loss_distill"], expected, rtol=1e-4, atol=1e-5)
    for got, want, x in zip(grads, expected_grads, params + feats):
        zero = torch.zeros_like(x)  # a pyramid level no box falls on
        torch.testing.assert_close(
            zero if got is None else got, zero if want is None else want, rtol=1e-3, atol=1e-6
        )


def _labels_of_one_step(model, batch):
    """One training step's sampled RPN labels (with the anchors) and the labelled ROI proposals,
    caught on their way to the losses, and the losses."""
    rpn, heads = model.proposal_generator, model.roi_heads
    rpn_losses, forward_box = rpn.losses, heads._forward_box
    seen = {}

    def catch_anchor_labels(anchors, logits, gt_labels, *args):
        seen["anchors"], seen["anchor_labels"] = Boxes.cat(anchors), [x.clone() for x in gt_labels]
        return rpn_losses(anchors, logits, gt_labels, *args)

    def catch_proposals(features, proposals, *args):
        seen["proposals"] = proposals
        return forward_box(features, proposals, *args)

    rpn.losses, heads._forward_box = catch_anchor_labels, catch_proposals
    model.train()
    torch.manual_seed(1)  # the same anchor and proposal sampling for every model
    with EventStorage():
        seen["losses"] = model(batch)
    return seen


def _steps_without_and_with(cfg, key, value, batch):
    """`_labels_of_one_step` of the model of `cfg` and of the same model (same weights) with the
    training option `key` set to `value`."""
    torch.manual_seed(0)
    paper = build_model(cfg)
    cfg = cfg.clone()
    cfg.merge_from_list([key, value])
    option = build_model(cfg)
    option.load_state_dict(paper.state_dict())
    return _labels_of_one_step(paper, batch), _labels_of_one_step(option, batch)


def test_not_background_leaves_covered_background_out_of_both_losses(tmp_path):
    """MODEL.EZSD.NOT_BACKGROUND_IOU: the anchors and ROI proposals that the paper's model (IoU 0,
    same weights) teaches as background and that one of the image's distilled regions covers at
    the IoU are left out of the losses; every other label is the paper's."""
    cfg = _cfg(tmp_path, **{"MODEL.PROPOSAL_GENERATOR.NAME": "EZSDRPN"})
    batch = _batch()
    before, after = _steps_without_and_with(cfg, "MODEL.EZSD.NOT_BACKGROUND_IOU", 0.3, batch)
    ignored_anchors = dropped_proposals = 0
    for i, x in enumerate(batch):
        regions = x["distill_regions"].boxes
        labels = before["anchor_labels"][i]
        covered = (pairwise_iou(before["anchors"], regions) >= 0.3).any(1)
        expected = torch.where((labels == 0) & covered, -1, labels)
        assert torch.equal(after["anchor_labels"][i], expected)
        ignored_anchors += int(((labels == 0) & covered).sum())

        p = before["proposals"][i]
        background = p.gt_classes == len(BASE)
        covered = (pairwise_iou(p.proposal_boxes, regions) >= 0.3).any(1)
        kept = p[~(background & covered)]
        q = after["proposals"][i]
        assert torch.equal(q.proposal_boxes.tensor, kept.proposal_boxes.tensor)
        assert torch.equal(q.gt_classes, kept.gt_classes)
        dropped_proposals += len(p) - len(q)
    assert ignored_anchors > 0 and dropped_proposals > 0


def test_object_like_background_away_from_base_boxes_is_left_out(tmp_path):
    """MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS: of the ROI proposals that the paper's model (same
    weights) samples, the background ones away from every GT box (IoU < 0.3, under half of their
    area inside one) with RPN objectness >= the threshold are left out; the RPN's labels and every
    other proposal are the paper's."""
    cfg = _cfg(tmp_path)
    batch = _batch()
    threshold = 0.5026  # the untrained RPN's objectness probabilities lie around it
    before, after = _steps_without_and_with(
        cfg, "MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS", threshold, batch
    )
    dropped = kept_away = kept_near = 0
    for i, x in enumerate(batch):
        assert torch.equal(after["anchor_labels"][i], before["anchor_labels"][i])
        p, gt = before["proposals"][i], x["instances"].gt_boxes
        background = p.gt_classes == len(BASE)
        near = (pairwise_iou(p.proposal_boxes, gt) >= 0.3).any(1)
        near |= (pairwise_ioa(gt, p.proposal_boxes) >= 0.5).any(0)
        object_like = torch.sigmoid(p.objectness_logits) >= threshold
        drop = background & ~near & object_like
        q = after["proposals"][i]
        assert torch.equal(q.proposal_boxes.tensor, p[~drop].proposal_boxes.tensor)
        assert torch.equal(q.gt_classes, p[~drop].gt_classes)
        dropped += int(drop.sum())
        kept_away += int((background & ~near & ~object_like).sum())
        kept_near += int((background & near & object_like).sum())
    assert dropped > 0 and kept_away > 0 and kept_near > 0
    with pytest.raises(
        UserInputError, match=r"NOT_BACKGROUND_OBJECTNESS must be in \[0, 1\], got -0.5"
    ):
        build_model(_cfg(tmp_path, **{"MODEL.EZSD.NOT_BACKGROUND_OBJECTNESS": -0.5}))
    unscored = [
        Instances(p.image_size, proposal_boxes=p.proposal_boxes) for p in _gt_proposals(batch)
    ]
    for p in unscored:
        p.gt_classes = torch.zeros(len(p), dtype=torch.int64)
    with pytest.raises(UserInputError, match="needs proposals with objectness scores"):
        drop_object_like_background(unscored, [x["instances"] for x in batch], 0.5, len(BASE))


def test_not_background_needs_the_ezsd_rpn(tmp_path):
    with pytest.raises(UserInputError, match="NOT_BACKGROUND_IOU .*'EZSDRPN', got 'RPN'"):
        build_model(_cfg(tmp_path, **{"MODEL.EZSD.NOT_BACKGROUND_IOU": 0.5}))


def test_novel_negatives_compete_on_the_proposals_on_base_objects(tmp_path):
    """MODEL.EZSD.NOVEL_NEGATIVES_INSIDE: the same sampled proposals as the paper's model (same
    weights); those labelled as a base class and the background ones with at least the share of
    their area inside a GT box are marked, and only the classification loss grows (the novel
    names add terms to the softmax's denominator there)."""
    cfg = _cfg(tmp_path, **{"MODEL.EZSD.TEST_TEXT_EMBEDDINGS": _vocab(tmp_path / "all.npy", ALL)})
    batch = _batch()
    before, after = _steps_without_and_with(cfg, "MODEL.EZSD.NOVEL_NEGATIVES_INSIDE", 0.6, batch)
    parts = elsewhere = 0
    for x, p, q in zip(batch, before["proposals"], after["proposals"]):
        assert torch.equal(q.proposal_boxes.tensor, p.proposal_boxes.tensor)
        background = q.gt_classes == len(BASE)
        inside = pairwise_ioa(x["instances"].gt_boxes, q.proposal_boxes).max(dim=0).values >= 0.6
        assert torch.equal(q.novel_negative, ~background | inside)
        parts += int((background & inside).sum())
        elsewhere += int((background & ~inside).sum())
    assert parts > 0 and elsewhere > 0
    assert after["losses"]["loss_cls"] > before["losses"]["loss_cls"]
    for key in ("loss_box_reg", "loss_distill", "loss_rpn_cls", "loss_rpn_loc"):
        torch.testing.assert_close(after["losses"][key], before["losses"][key])


def test_novel_negative_logits_and_loss_by_hand(tmp_path):
    """The predictor's scores gain one column per novel name (T * cosine with its text embedding)
    on the marked regions, -inf elsewhere; the classification loss is the cross-entropy over base
    names, background and the novel names where marked."""
    cfg = _cfg(tmp_path, **{"MODEL.EZSD.TEST_TEXT_EMBEDDINGS": _vocab(tmp_path / "all.npy", ALL)})
    cfg.MODEL.EZSD.NOVEL_NEGATIVES_INSIDE = 0.5
    predictor = build_model(cfg).roi_heads.box_predictor.train()
    g = torch.Generator().manual_seed(3)
    embeddings, reg = torch.randn(6, D, generator=g), torch.randn(6, 32, generator=g)
    marked = torch.tensor([True, True, False, True, False, False])
    gt = torch.tensor([0, 3, 3, 2, 1, 3])  # 3 = background
    scores, deltas = predictor((embeddings, reg), gt, marked)
    assert scores.shape == (6, len(BASE) + 1 + 2) and predictor.cls_score.novel_names == ALL[3:]
    novel_text = F.normalize(torch.from_numpy(np.load(tmp_path / "all.npy"))[3:].float(), dim=1)
    expected = predictor.temperature * F.normalize(embeddings, dim=1) @ novel_text.t()
    torch.testing.assert_close(scores[marked, 4:], expected[marked].detach())
    assert torch.isneginf(scores[~marked, 4:]).all()

    proposals = [
        Instances(
            (50, 50), proposal_boxes=Boxes(torch.tensor([[1.0, 2, 20, 30]] * 6)), gt_classes=gt
        )
    ]
    with EventStorage():  # FastRCNNOutputLayers.losses logs its accuracy
        loss = predictor.losses((scores, deltas), proposals)["loss_cls"]
        paper = predictor.losses((scores[:, :4], deltas), proposals)["loss_cls"]
        unmarked, _ = predictor((embeddings, reg), gt, torch.zeros(6, dtype=torch.bool))
        loss_unmarked = predictor.losses((unmarked, deltas), proposals)["loss_cls"]
    own = scores[:, :4]
    by_hand = torch.stack(
        [
            torch.logsumexp(torch.cat([own[i], scores[i, 4:]] if marked[i] else [own[i]]), 0)
            - own[i, gt[i]]
            for i in range(6)
        ]
    ).mean()
    torch.testing.assert_close(loss, by_hand)
    assert loss > paper
    torch.testing.assert_close(loss_unmarked, paper)


def test_novel_negatives_need_novel_names_in_training_only(tmp_path):
    """A model built for inference from a training config with the option (tools/demo.py sets its
    own vocabulary) needs no novel names; its training step does."""
    model = build_model(_cfg(tmp_path, **{"MODEL.EZSD.NOVEL_NEGATIVES_INSIDE": 0.7}))
    model.eval()
    with torch.no_grad():
        assert len(model([{"image": _batch(False)[0]["image"]}])[0]["instances"]) > 0
    model.train()
    with EventStorage(), pytest.raises(UserInputError, match="needs novel names in training"):
        model(_batch())
    # a training name spelled otherwise in the inference vocabulary would count as novel
    other = ["Lemon"] + ALL[1:]
    cfg = _cfg(tmp_path, **{"MODEL.EZSD.TEST_TEXT_EMBEDDINGS": _vocab(tmp_path / "o.npy", other)})
    cfg.MODEL.EZSD.NOVEL_NEGATIVES_INSIDE = 0.7
    with (
        EventStorage(),
        pytest.raises(UserInputError, match=r"lacks the training name\(s\) \['lemon'\]"),
    ):
        build_model(cfg).train()(_batch())


def test_novel_negatives_with_not_background(tmp_path):
    """Both training options: the marks stay with the proposals that NOT_BACKGROUND_IOU keeps."""
    torch.manual_seed(0)
    cfg = _cfg(
        tmp_path,
        **{
            "MODEL.EZSD.TEST_TEXT_EMBEDDINGS": _vocab(tmp_path / "all.npy", ALL),
            "MODEL.PROPOSAL_GENERATOR.NAME": "EZSDRPN",
            "MODEL.EZSD.NOVEL_NEGATIVES_INSIDE": 0.6,
            "MODEL.EZSD.NOT_BACKGROUND_IOU": 0.3,
        },
    )
    batch = _batch()
    seen = _labels_of_one_step(build_model(cfg), batch)
    for x, q in zip(batch, seen["proposals"]):
        background = q.gt_classes == len(BASE)
        assert not (
            background & (pairwise_iou(q.proposal_boxes, x["distill_regions"].boxes) >= 0.3).any(1)
        ).any()
        inside = pairwise_ioa(x["instances"].gt_boxes, q.proposal_boxes).max(dim=0).values >= 0.6
        assert torch.equal(q.novel_negative, ~background | inside)
    assert torch.isfinite(seen["losses"]["loss_cls"])
    with pytest.raises(
        UserInputError, match=r"NOVEL_NEGATIVES_INSIDE must be in \[0, 1\], got 1.5"
    ):
        build_model(_cfg(tmp_path, **{"MODEL.EZSD.NOVEL_NEGATIVES_INSIDE": 1.5}))
