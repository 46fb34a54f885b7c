"""Single-object trackers with OpenCV's protocol: ``tracker.init(frame, (x, y, w, h))``, then
``ok, box = tracker.update(frame)`` per ``H x W x 3`` uint8 frame.

* :class:`KCF`: kernelized correlation filters (Henriques et al. 2015), grey pixels or HOG.
"""

from handgrad.tracking.kcf import KCF

__all__ = ["KCF"]
