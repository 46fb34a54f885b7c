"""Single-object trackers with OpenCV's protocol: ``tracker.init(frame, (x, y, w, h))``, then
``ok, box = tracker.update(frame)`` per ``H x W x 3`` uint8 frame.

* :class:`KCF`: kernelized correlation filters (Henriques et al. 2015), grey pixels or HOG.
* ``SearchCNN``, ``SiamRPN`` (learned trackers) are imported on first use (they pull in the engine).

``create_tracker(name)`` builds one by the command line's names: ``kcf`` (grey pixels), ``kcf-hog``,
``search-cnn``, ``siamrpn`` (the last two need trained weights, ``weights=FILE``).
"""

from __future__ import annotations

from typing import Any

from handgrad.tracking.kcf import KCF

__all__ = ["KCF", "SearchCNN", "SiamRPN", "TRACKERS", "create_tracker"]

TRACKERS = ("kcf", "kcf-hog", "search-cnn", "siamrpn")


def __getattr__(name: str) -> Any:
    if name == "SearchCNN":
        from handgrad.tracking.search_cnn import SearchCNN

        return SearchCNN
    if name == "SiamRPN":
        from handgrad.tracking.siamrpn import SiamRPN

        return SiamRPN
    raise AttributeError(f"module 'handgrad.tracking' has no attribute {name!r}")


def create_tracker(name: str, weights: str | None = None) -> Any:
    """A fresh tracker by name (see :data:`TRACKERS`); ``weights`` is the file of a learned tracker."""
    if name == "kcf":
        return KCF("gray")
    if name == "kcf-hog":
        return KCF("hog")
    if name in ("search-cnn", "siamrpn"):
        if weights is None:
            raise ValueError(f"create_tracker: {name} needs trained weights (weights=FILE)")
        cls = __getattr__("SearchCNN" if name == "search-cnn" else "SiamRPN")
        return cls.load(weights)
    raise ValueError(f"create_tracker: unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
