"""``handgrad run mask-rcnn-scenes``: Mask R-CNN (He et al. 2017) on the generated scenes: Faster R-CNN's
loop (:mod:`handgrad.experiments.faster_rcnn_scenes`) with the mask head trained jointly (five losses).

Reports box mAP@0.5 / COCO mAP and mask AP (COCO segm with handgrad's own RLE and mask IoU: mask mAP@0.5
and mask COCO mAP) on the test scenes, and writes ``detections.png``: a grid of test scenes with the
predicted instance masks blended in colour (one colour per class), boxes, classes and scores.
"""

from __future__ import annotations

from typing import Any

from handgrad.experiments.faster_rcnn_scenes import add_arguments, run_experiment

__all__ = ["add_arguments", "run"]


def run(opts: Any) -> dict[str, Any]:
    return run_experiment(opts, masks=True)
