"""``handgrad.linalg`` = ``torch.linalg`` (the parts handgrad has): ``norm``, ``vector_norm``."""

from handgrad.engine.ops.norm import linalg_norm as norm
from handgrad.engine.ops.norm import vector_norm

__all__ = ["norm", "vector_norm"]
