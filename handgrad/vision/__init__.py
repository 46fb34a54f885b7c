"""Vision: ``torchvision``-style ops (boxes, NMS, RoI pooling), masks, proposals and detection models."""
