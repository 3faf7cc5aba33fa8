"""Offline stages that run before detector training: they use CLIP and write files with manifests.

Modules (import them directly; this package imports nothing on its own, so each tool pays only
for what it uses):
    renormalization  CLIP re-normalization: LayerNorm-only tuning on base GT crops, resumable,
                     with before/after crop accuracy (tools/finetune_clip.py)
    anchors          dense candidate boxes (stride, sizes, ratios) and their presets
    proposals        CLIP proposals: crop scoring, objectness = log C - entropy, NMS, top-K;
                     the exhaustive mode and the coarse-to-fine fast mode
    region_features  base-GT filtering of proposals, 1.2x crop encoding, per-image records
    sharding         deterministic image split, torch.distributed rank/world handling
    pipeline         the resumable, sharded pre-computation run behind
                     tools/precompute_clip_features.py (files, manifests, progress)
    precompute_cli   that tool's command line (arguments -> PrecomputeConfig -> run_precompute)
    renormalization_cli  tools/finetune_clip.py's command line
    rpn_candidates   candidate boxes of the 'rpn' proposal mode (an RPN-only model)
    recall           recall of (novel) GT boxes by stored proposals

The offline code never imports the detector (ezsd.modeling): data flows to it through files.
"""
