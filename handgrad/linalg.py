"""``handgrad.linalg`` = ``torch.linalg`` (the parts handgrad has): ``norm``, ``vector_norm``, ``matrix_norm``."""

from handgrad.engine.ops.linalg_matrix_norm import matrix_norm
from handgrad.engine.ops.norm import linalg_norm as norm
from handgrad.engine.ops.norm import vector_norm

__all__ = ["matrix_norm", "norm", "vector_norm"]
