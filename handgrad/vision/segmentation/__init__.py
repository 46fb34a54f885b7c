"""Image segmentation: Felzenszwalb-Huttenlocher graph segmentation (the first stage of selective search)."""

from handgrad.vision.segmentation.felzenszwalb import felzenszwalb
