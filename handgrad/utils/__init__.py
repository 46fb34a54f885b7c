"""``handgrad.utils``: PyTorch's ``torch.utils`` import paths (``handgrad.utils.data``)."""

from handgrad.utils import data

__all__ = ["data"]
