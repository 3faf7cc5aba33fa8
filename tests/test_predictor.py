"""EZSD's cosine classifier, semantic regression, vocabulary swap and distillation loss
(CPU, tiny)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ezsd.data.text_embedding_file import save_text_embeddings
from ezsd.modeling import (
    EZSDBoxHead,
    EZSDPredictor,
    TestTimeExtensions,
    distillation_loss,
    load_vocabulary_file,
    normalize_weights_per_image,
)
from ezsd.utils.errors import UserInputError

D, F_REG = 8, 6


def _text(num, seed=0):
    return F.normalize(torch.randn(num, D, generator=torch.Generator().manual_seed(seed)), dim=1)


def _predictor(num_classes=3, **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("text_embeddings", _text(num_classes))
    kwargs.setdefault("class_names", [f"c{i}" for i in range(num_classes)])
    return EZSDPredictor(
        ShapeSpec(channels=D),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        reg_input_shape=ShapeSpec(channels=F_REG),
        **kwargs,
    )


def _inputs(num=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num, D, generator=g), dim=1), torch.randn(
        num, F_REG, generator=g
    )


def test_logits_are_temperature_times_cosine_and_background():
    pred = _predictor().eval()
    emb, reg = _inputs()
    scores, deltas = pred((emb * 3.0, reg))  # the predictor normalises region embeddings itself
    assert scores.shape == (5, 4) and deltas.shape == (5, 4)
    text = _text(3)
    cos = F.cosine_similarity(emb[:, None], text[None], dim=2)
    torch.testing.assert_close(scores[:, :3], 100.0 * cos, rtol=1e-5, atol=1e-4)
    bg = 100.0 * emb @ pred.bg_score.weight[0]
    torch.testing.assert_close(scores[:, 3], bg, rtol=1e-5, atol=1e-4)
    assert pred.bg_score.bias is None
    assert math.isclose(pred.log_temperature.item(), math.log(100.0), rel_tol=1e-6)


def test_temperature_learned_or_fixed():
    learned = _predictor()
    assert any(p is learned.log_temperature for p in learned.parameters())
    emb, reg = _inputs()
    with EventStorage():
        scores, _ = learned.train()((emb, reg), torch.tensor([0, 1, 3, 3, 2]))
    scores.sum().backward()
    assert learned.log_temperature.grad is not None and learned.log_temperature.grad != 0

    fixed = _predictor(temperature=20.0, learn_temperature=False)
    assert all(p is not fixed.log_temperature for p in fixed.parameters())
    assert (
        "cls_score.log_temperature" in dict(fixed.named_buffers())
        and "cls_score.log_temperature" in fixed.state_dict()
    )
    scores, _ = fixed.eval()((emb, reg))
    torch.testing.assert_close(scores[:, :3], 20.0 * emb @ _text(3).t(), rtol=1e-5, atol=1e-5)


def _condition_on_text(pred):
    """Make the regression read the first 4 dims of its text input: deltas = text[:, :4]."""
    with torch.no_grad():
        pred.bbox_pred.weight.zero_()
        pred.bbox_pred.bias.zero_()
        pred.bbox_pred.weight[:, F_REG : F_REG + 4] = torch.eye(4)


def test_semantic_regression_uses_assigned_class_in_training():
    pred = _predictor()
    _condition_on_text(pred)
    text = _text(3)
    emb, reg = _inputs()
    gt = torch.tensor([2, 0, 3, 1, 3])  # 3 = background
    with EventStorage():
        _, deltas = pred.train()((emb, reg), gt)
    expected = torch.cat([text, torch.zeros(1, D)])[gt][:, :4]
    torch.testing.assert_close(deltas, expected)
    assert pred.bbox_pred.in_features == F_REG + D

    plain = _predictor(semantic_regression=False)
    assert plain.bbox_pred.in_features == F_REG
    assert plain.eval()((emb, reg))[1].shape == (5, 4)


def test_semantic_regression_at_inference_follows_softmax_with_background():
    """The official rule: the text of argmax softmax([T*cos_1..T*cos_C, T*<w_bg, x>]); the zero
    vector when background wins. By hand: text_c = e_c (c = 0, 1, 2), w_bg = 0.02 e_3, T = 100."""
    eye = torch.eye(D)
    pred = _predictor(text_embeddings=eye[:3])
    _condition_on_text(pred)  # deltas = the first 4 dims of the conditioning text
    with torch.no_grad():
        pred.bg_score.weight.copy_(0.02 * eye[3:4])
    regions = torch.stack(
        [
            eye[3],  # cos 0, 0, 0; bg logit 2: background
            F.normalize(eye[3] + 0.01 * eye[2], dim=0),  # class 2 logit 1.0 < bg 2.0: background
            F.normalize(eye[1] + 0.5 * eye[3], dim=0),  # class 1 logit 89.4 > bg 0.9: class 1
            F.normalize(eye[2] - eye[3], dim=0),  # class 2 logit 70.7 > bg -1.4: class 2
        ]
    )
    scores, deltas = pred.eval()((regions, torch.zeros(4, F_REG)))
    torch.testing.assert_close(
        scores[:, 3], torch.tensor([2.0, 2.0, 0.8944, -1.4142]), atol=1e-3, rtol=0
    )
    expected = torch.stack([torch.zeros(4), torch.zeros(4), eye[1, :4], eye[2, :4]])
    torch.testing.assert_close(deltas, expected)
    # the foreground-only argmax (the rule before issue 23) would condition rows 0-1 on a class
    assert scores[:2, :3].argmax(1).tolist() == [0, 2]


def test_vocabulary_swap_keeps_a_buffer_and_changes_num_classes():
    pred = _predictor(
        num_classes=3, test_text_embeddings=_text(5, seed=3), test_class_names=list("abcde")
    )
    assert pred.num_classes == 3 and pred.class_names == ["c0", "c1", "c2"]
    assert "text_embeddings" not in pred.state_dict()  # checkpoints are vocabulary-free
    pred.eval()  # the inference vocabulary becomes active
    assert pred.num_classes == 5 and tuple(pred.text_embeddings.shape) == (5, D)
    assert any(b is pred.text_embeddings for b in pred.buffers())

    emb, reg = _inputs()
    proposals = [Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[1.0, 2, 30, 40]] * 5)))]
    scores, _ = pred((emb, reg))
    assert scores.shape == (5, 6)
    assert pred.predict_probs((scores, torch.zeros(5, 4)), proposals)[0].shape == (5, 6)

    pred.set_vocabulary(_text(7, seed=4).numpy() * 2, [f"n{i}" for i in range(7)])
    assert pred.num_classes == 7 and pred.class_names[-1] == "n6"
    assert any(b is pred.text_embeddings for b in pred.buffers())
    torch.testing.assert_close(pred.text_embeddings.norm(dim=1), torch.ones(7))
    instances, _ = pred.inference(pred((emb, reg)), proposals)
    assert instances[0].pred_classes.max() < 7
    pred.train()
    assert pred.num_classes == 3  # training vocabulary untouched
    pred.eval()
    assert pred.num_classes == 7  # the swapped inference vocabulary stays
    with pytest.raises(UserInputError, match=r"shape \(2, 4\)"):
        pred.set_vocabulary(torch.zeros(2, 4), ["a", "b"])


def test_objectness_exponent_weights_class_probabilities_at_inference(tmp_path):
    emb, reg = _inputs()
    logits = torch.tensor([-3.0, -1.0, 0.0, 2.0, 5.0])
    boxes = Boxes(torch.tensor([[1.0, 2, 30, 40]] * 5))
    proposals = [Instances((50, 50), proposal_boxes=boxes, objectness_logits=logits)]
    soft = dict(temperature=1.0, learn_temperature=False)  # comparable class probabilities
    plain = _predictor(**soft).eval()
    predictions = plain((emb, reg))
    softmax = predictions[0].softmax(-1)
    torch.testing.assert_close(plain.predict_probs(predictions, proposals)[0], softmax)

    weighted = _predictor(extensions=TestTimeExtensions(objectness_exponent=2.0), **soft).eval()
    probs = weighted.predict_probs(predictions, proposals)[0]
    torch.testing.assert_close(probs[:, :-1], softmax[:, :-1] * logits.sigmoid()[:, None] ** 2)
    torch.testing.assert_close(probs[:, -1], softmax[:, -1])  # background left as it is
    # an unlikely object (logit -3) keeps < 1% of its class probabilities, a likely one > 97%
    ratio = probs[:, :-1] / softmax[:, :-1]
    assert (ratio[0] < 0.01).all() and (ratio[4] > 0.97).all()

    without_scores = [Instances((50, 50), proposal_boxes=boxes)]
    with pytest.raises(UserInputError, match="TEST_OBJECTNESS_EXPONENT > 0 needs proposals"):
        weighted.predict_probs(predictions, without_scores)
    with pytest.raises(UserInputError, match="TEST_OBJECTNESS_EXPONENT must be >= 0, got -1"):
        _predictor(extensions=TestTimeExtensions(objectness_exponent=-1.0))
    cfg = _cfg(tmp_path)
    cfg.MODEL.EZSD.TEST_OBJECTNESS_EXPONENT = 0.5
    shapes = (ShapeSpec(channels=D), ShapeSpec(channels=F_REG))
    assert EZSDPredictor(cfg, *shapes).extensions.objectness_exponent == 0.5


def test_split_softmax_keeps_base_and_novel_names_apart_at_inference(tmp_path):
    names = ["c0", "n0", "c2", "n1"]  # c*: the training vocabulary's (base), n*: novel
    pred = _predictor(
        extensions=TestTimeExtensions(split_softmax=True),
        test_text_embeddings=_text(4, seed=5),
        test_class_names=names,
    ).eval()
    emb, reg = _inputs()
    predictions = pred((emb, reg))
    scores = predictions[0]
    proposals = [Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[1.0, 2, 30, 40]] * 5)))]
    probs = pred.predict_probs(predictions, proposals)[0]
    base = scores[:, [0, 2, 4]].softmax(-1)
    novel = scores[:, [1, 3, 4]].softmax(-1)
    torch.testing.assert_close(probs[:, [0, 2]], base[:, :2])
    torch.testing.assert_close(probs[:, [1, 3]], novel[:, :2])
    torch.testing.assert_close(probs[:, 4], scores.softmax(-1)[:, 4])
    assert not torch.allclose(probs, scores.softmax(-1))
    # a vocabulary of base names only, or training mode: the plain softmax
    pred.set_vocabulary(_text(3).numpy(), ["c0", "c1", "c2"])
    plain = pred((emb, reg))
    torch.testing.assert_close(pred.predict_probs(plain, proposals)[0], plain[0].softmax(-1))
    pred.train()
    train_out = pred((emb, reg))
    torch.testing.assert_close(
        pred.predict_probs(train_out, proposals)[0], train_out[0].softmax(-1)
    )
    cfg = _cfg(tmp_path)
    cfg.MODEL.EZSD.TEST_SPLIT_SOFTMAX = True
    shapes = (ShapeSpec(channels=D), ShapeSpec(channels=F_REG))
    assert EZSDPredictor(cfg, *shapes).extensions.split_softmax


def test_vocabulary_classifier_alone_and_checkpoints_of_the_flat_layout():
    """VocabularyClassifier is a module of its own (logits, vocabulary swap, no text embeddings in
    its state); a predictor's state dict written before the classifier was a module (log T and
    the background vector at the predictor's level) loads into the same values."""
    from ezsd.modeling import VocabularyClassifier

    clf = VocabularyClassifier(D, _text(3), ["a", "b", "c"], temperature=10.0)
    emb, _ = _inputs()
    torch.testing.assert_close(clf(emb)[:, :3], 10.0 * emb @ _text(3).t(), rtol=1e-5, atol=1e-5)
    assert sorted(clf.state_dict()) == ["bg_score.weight", "log_temperature"]
    clf.eval().set_vocabulary(_text(5, seed=2), list("vwxyz"))
    assert (
        clf.num_classes == 5 and clf(emb).shape == (5, 6) and clf.training_names == ["a", "b", "c"]
    )
    assert clf.train().num_classes == 3

    source = _predictor()
    with torch.no_grad():
        source.cls_score.log_temperature.fill_(3.0)
        source.cls_score.bg_score.weight.normal_()
    flat = {k.replace("cls_score.", ""): v for k, v in source.state_dict().items()}
    assert "log_temperature" in flat and "bg_score.weight" in flat
    target = _predictor()
    incompatible = target.load_state_dict(flat)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_vocabulary_file_and_mismatched_sidecar(tmp_path):
    path = str(tmp_path / "voc.npy")
    save_text_embeddings(path, _text(3).numpy(), ["lemon", "lime", "brick"])
    emb, names = load_vocabulary_file(path, ["lemon", "lime", "brick"])
    assert (
        emb.dtype == torch.float32 and emb.shape == (3, D) and names == ["lemon", "lime", "brick"]
    )
    with pytest.raises(UserInputError) as e:
        load_vocabulary_file(
            path, ["lemon", "brick", "lime"], "MODEL.EZSD.TEXT_EMBEDDINGS", "toy_train"
        )
    message = str(e.value)
    assert "\n" not in message and "voc.npy" in message and "voc.names.json" in message
    assert "'brick'" in message and "'lime'" in message and "toy_train" in message
    with pytest.raises(UserInputError, match="MODEL.EZSD.TEXT_EMBEDDINGS is empty"):
        load_vocabulary_file("", None, "MODEL.EZSD.TEXT_EMBEDDINGS")


def test_box_head_branches():
    # seeded: at FC width 6 some random inputs zero every ReLU before the embedding layer
    torch.manual_seed(0)
    head = EZSDBoxHead(
        ShapeSpec(channels=4, height=5, width=5),
        embed_dim=D,
        conv_dim=6,
        fc_dim=F_REG,
        conv_norm="",
    )
    emb, reg = head(torch.randn(7, 4, 5, 5), num_reg=3)
    assert emb.shape == (7, D) and reg.shape == (3, F_REG)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(7))
    assert head.output_shape.channels == D and head.reg_output_shape.channels == F_REG
    assert len(head.shared_convs) == 3


def test_distillation_loss_matches_hand_computation():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    targets = torch.tensor(
        [[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]
    )  # normalised: (.6,.8), (0,1), (1,0)
    weights = torch.tensor([1.0, 0.5, 1.0])  # image 0: GT + proposal (conf .5); image 1: GT
    # image 0 weights -> mean 1: [1/.75, .5/.75]; image 1: [1]
    l1_rows = torch.tensor([0.4 + 0.8, 0.0, 0.4 + 0.8])  # |e - t| summed over D
    w = torch.tensor([1 / 0.75, 0.5 / 0.75, 1.0])
    expected = 2 * (w * l1_rows).sum() / (3 * 2) * 0.5  # D * mean over K*D elements * factor
    loss = distillation_loss(emb, targets, weights, [2, 1], factor=0.5)
    torch.testing.assert_close(loss, expected)
    # fp16 targets (as stored) give the same value
    torch.testing.assert_close(
        distillation_loss(emb, targets.half(), weights, [2, 1], 0.5), expected
    )
    empty = distillation_loss(
        torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), torch.zeros(0), [0]
    )
    assert empty.item() == 0 and empty.requires_grad


def test_weights_normalised_per_image():
    w = normalize_weights_per_image(torch.tensor([1.0, 0.2, 0.3, 2.0, 2.0, 0.0, 0.0]), [3, 2, 0, 2])
    np.testing.assert_allclose(w[:3].mean(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[3:5].numpy(), [1.0, 1.0])
    assert torch.all(w[5:] == 0)  # an all-zero image stays zero (no division by zero)
    np.testing.assert_allclose((w[:3] / w[0]).numpy(), [1.0, 0.2, 0.3], rtol=1e-6)


def _cfg(tmp_path, train=(), test=(), test_file=False):
    from detectron2.config import get_cfg

    from ezsd import add_ezsd_config

    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.MODEL.EZSD.EMBED_DIM = D
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.EZSD.TEXT_EMBEDDINGS = str(tmp_path / "base.npy")
    save_text_embeddings(cfg.MODEL.EZSD.TEXT_EMBEDDINGS, _text(2).numpy(), ["lemon", "lime"])
    if test_file:
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS = str(tmp_path / "all.npy")
        save_text_embeddings(
            cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS, _text(3).numpy(), ["lemon", "lime", "kiwi"]
        )
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = train, test
    return cfg


def test_vocabularies_from_config_are_checked_against_datasets(tmp_path):
    from detectron2.data import MetadataCatalog

    shapes = (ShapeSpec(channels=D), ShapeSpec(channels=F_REG))
    train, test = "ezsd_test_pred_train", "ezsd_test_pred_val"
    pred = EZSDPredictor(_cfg(tmp_path, (train,), (test,), test_file=True), *shapes)
    assert (
        pred.num_classes == 2
        and pred.eval().num_classes == 3
        and pred.log_temperature.requires_grad
    )
    # classes unknown at build time (a COCO json sets them when loaded): checked at first forward
    MetadataCatalog.get(test).set(thing_classes=["lemon", "kiwi", "lime"])
    with pytest.raises(
        UserInputError, match="class 1 is 'lime' but 'kiwi' is expected.*TEST_TEXT_EMBEDDINGS"
    ):
        pred(_inputs())
    pred.set_vocabulary(_text(3).numpy(), ["lemon", "kiwi", "lime"])  # the user's own: accepted
    assert pred(_inputs())[0].shape == (5, 4)
    # no inference vocabulary although the test dataset has other classes: refused at build time
    with pytest.raises(UserInputError, match="set MODEL.EZSD.TEST_TEXT_EMBEDDINGS"):
        EZSDPredictor(_cfg(tmp_path, (train,), (test,)), *shapes)


def test_text_embeddings_of_another_dimension_than_embed_dim_are_refused(tmp_path):
    """One line naming the file, its setting and MODEL.EZSD.EMBED_DIM with both values."""
    from ezsd.modeling.vocabulary import vocabularies_from_config

    cfg = _cfg(tmp_path, test_file=True)
    cfg.MODEL.EZSD.EMBED_DIM = 2 * D
    with pytest.raises(UserInputError) as e:
        vocabularies_from_config(cfg)
    assert str(e.value).startswith(
        f"MODEL.EZSD.TEXT_EMBEDDINGS {tmp_path}/base.npy: text embeddings of dimension {D}, "
        f"but MODEL.EZSD.EMBED_DIM is {2 * D}; "
    )
    cfg = _cfg(tmp_path, test_file=True)
    save_text_embeddings(
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS, np.ones((3, 2 * D)), ["lemon", "lime", "kiwi"]
    )
    with pytest.raises(UserInputError) as e:
        vocabularies_from_config(cfg)
    assert str(e.value).startswith(
        f"MODEL.EZSD.TEST_TEXT_EMBEDDINGS {tmp_path}/all.npy: text embeddings of dimension "
        f"{2 * D}, but MODEL.EZSD.EMBED_DIM is {D}; "
    )


def test_temperature_lr_factor_scales_log_t_and_background_only():
    """train_net's optimizer gives MODEL.EZSD.TEMPERATURE_LR_FACTOR to the parameters whose
    gradient carries T (log T, the background vector) and the base LR to every other one."""
    from detectron2.config import get_cfg
    from torch import nn

    from ezsd import add_ezsd_config
    from ezsd.engine import Trainer
    from ezsd.modeling import temperature_scaled_parameters

    model = nn.Module()
    model.roi_heads = nn.Module()
    model.roi_heads.box_predictor = pred = _predictor()
    assert temperature_scaled_parameters(model) == [
        "roi_heads.box_predictor.cls_score.log_temperature",
        "roi_heads.box_predictor.cls_score.bg_score.weight",
    ]
    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.SOLVER.BASE_LR, cfg.MODEL.EZSD.TEMPERATURE_LR_FACTOR = 0.02, 0.01
    optimizer = Trainer.build_optimizer(cfg, model)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert group_of[id(pred.log_temperature)]["lr"] == pytest.approx(0.0002)
    assert group_of[id(pred.log_temperature)]["weight_decay"] == 0.0
    assert group_of[id(pred.bg_score.weight)]["lr"] == pytest.approx(0.0002)
    scaled = ("cls_score.log_temperature", "cls_score.bg_score.weight")
    others = [p for n, p in pred.named_parameters() if n not in scaled]
    assert others and all(group_of[id(p)]["lr"] == pytest.approx(0.02) for p in others)
    fixed = _predictor(learn_temperature=False)  # a buffer, not a parameter: nothing to scale
    assert temperature_scaled_parameters(fixed) == ["cls_score.bg_score.weight"]


def test_solver_optimizer_selects_sgd_or_adamw_with_the_same_groups_and_clipping():
    """SOLVER.OPTIMIZER: SGD (the paper's) or ADAMW, each with the EZSD parameter groups and
    detectron2's gradient clipping; any other name is a one-line error naming the key."""
    from detectron2.config import get_cfg
    from torch import nn

    from ezsd import add_ezsd_config
    from ezsd.engine import Trainer
    from ezsd.utils.errors import UserInputError

    build = Trainer.build_optimizer
    cfg = get_cfg()
    add_ezsd_config(cfg)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    cfg.SOLVER.BASE_LR, cfg.MODEL.EZSD.TEMPERATURE_LR_FACTOR = 0.02, 0.5
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    for name, kind in (("SGD", torch.optim.SGD), ("AdamW", torch.optim.AdamW)):
        cfg.SOLVER.OPTIMIZER = name
        model = nn.Module()
        model.box_predictor = pred = _predictor()
        optimizer = build(cfg, model)
        assert isinstance(optimizer, kind)
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        assert group_of[id(pred.log_temperature)]["lr"] == pytest.approx(0.01)
        # one step with a huge gradient: clipped to norm 1e-3 per parameter, so the bias moves
        # by at most lr * 1e-3 (SGD) or about lr (AdamW's normalised first step)
        before = pred.bbox_pred.bias.detach().clone()
        for p in pred.parameters():
            p.grad = torch.zeros_like(p)
        pred.bbox_pred.bias.grad.fill_(1e6)
        optimizer.step()
        moved = (pred.bbox_pred.bias.detach() - before).abs().max().item()
        assert 0 < moved <= (0.02 * 1e-3 * 1.01 if name == "SGD" else 0.0201)
    cfg.SOLVER.OPTIMIZER = "LION"
    with pytest.raises(UserInputError, match="SOLVER.OPTIMIZER 'LION'"):
        build(cfg, _predictor())


def test_vocabularies_of_different_clips_are_refused(tmp_path):
    """Training and test embeddings (and MODEL.EZSD.CLIP.MODEL when it is a file) must come from
    one CLIP: checked when the predictor is built, i.e. for training and for evaluation."""
    shapes = (ShapeSpec(channels=D), ShapeSpec(channels=F_REG))
    clip_file = tmp_path / "clip.pt"
    clip_file.write_bytes(b"a CLIP checkpoint")
    from ezsd.utils.file_io import file_sha256

    clip_hash = file_sha256(str(clip_file))
    cfg = _cfg(tmp_path, test_file=True)
    save_text_embeddings(
        cfg.MODEL.EZSD.TEXT_EMBEDDINGS, _text(2).numpy(), ["lemon", "lime"], clip_hash=clip_hash
    )
    save_text_embeddings(
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS,
        _text(3).numpy(),
        ["lemon", "lime", "kiwi"],
        clip_hash="0123456789ab",
    )
    with pytest.raises(UserInputError) as e:
        EZSDPredictor(cfg, *shapes)
    message = str(e.value)
    assert "MODEL.EZSD.TEST_TEXT_EMBEDDINGS" in message and "all.npy" in message
    assert "CLIP 0123456789ab" in message and f"CLIP {clip_hash}" in message and "\n" not in message
    # a test file without a hash next to a training file with one: cannot be checked, refused
    save_text_embeddings(
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS, _text(3).numpy(), ["lemon", "lime", "kiwi"]
    )
    with pytest.raises(UserInputError, match="all.npy records no CLIP hash"):
        EZSDPredictor(cfg, *shapes)
    save_text_embeddings(
        cfg.MODEL.EZSD.TEST_TEXT_EMBEDDINGS,
        _text(3).numpy(),
        ["lemon", "lime", "kiwi"],
        clip_hash=clip_hash,
    )
    cfg.MODEL.EZSD.CLIP.MODEL = str(clip_file)
    assert EZSDPredictor(cfg, *shapes).eval().num_classes == 3  # all three agree
    clip_file.write_bytes(b"another CLIP checkpoint")
    with pytest.raises(
        UserInputError,
        match=f"MODEL.EZSD.CLIP.MODEL .*clip.pt was made with CLIP "
        f"{file_sha256(str(clip_file))} but .*base.npy with CLIP {clip_hash}",
    ):
        EZSDPredictor(cfg, *shapes)


def test_every_test_dataset_is_checked(tmp_path):
    """The inference vocabulary serves every DATASETS.TEST entry, not only the first."""
    from detectron2.data import MetadataCatalog

    shapes = (ShapeSpec(channels=D), ShapeSpec(channels=F_REG))
    ok, bad, late = "ezsd_test_pred_val_ok", "ezsd_test_pred_val_bad", "ezsd_test_pred_val_late"
    MetadataCatalog.get(ok).set(thing_classes=["lemon", "lime", "kiwi"])
    MetadataCatalog.get(bad).set(thing_classes=["lemon", "kiwi", "lime"])
    with pytest.raises(UserInputError, match=f"DATASETS.TEST: datasets '{ok}' .* and '{bad}'"):
        EZSDPredictor(_cfg(tmp_path, test=(ok, bad), test_file=True), *shapes)
    with pytest.raises(UserInputError, match=f"class 1 is 'lime' but 'kiwi' is expected.*{bad}"):
        EZSDPredictor(_cfg(tmp_path, test=(bad,), test_file=True), *shapes)
    # classes known only after loading (a COCO json): checked at the first forward of eval mode
    pred = EZSDPredictor(_cfg(tmp_path, test=(ok, late), test_file=True), *shapes).eval()
    MetadataCatalog.get(late).set(thing_classes=["kiwi", "lemon", "lime"])
    with pytest.raises(UserInputError, match=f"do not match the classes of dataset '{late}'"):
        pred(_inputs())
