"""Detection models: the small scene backbone, R-CNN and Fast R-CNN."""

from handgrad.vision.models.backbone import CropClassifier, SceneBackbone
from handgrad.vision.models.fast_rcnn import FastRCNN
