"""``torchvision.ops``: box utilities, non-maximum suppression and the differentiable RoI ops."""

from handgrad.vision.ops.boxes import (
    BoxCoder, box_area, box_convert, box_iou, check_boxes, clip_boxes_to_image, decode_boxes, encode_boxes,
    remove_small_boxes,
)
from handgrad.vision.ops.nms import batched_nms, nms
from handgrad.vision.ops.roi_align import RoIAlign, RoIAlignFunction, roi_align
from handgrad.vision.ops.roi_pool import RoIPool, RoIPoolFunction, roi_pool
