"""``handgrad.functional``: the functional API, named and shaped like ``torch.nn.functional``.

Use as ``import handgrad.functional as F``. Each submodule groups one family (activations, conv, pooling,
normalisation, losses, ...); this file only re-exports them.
"""
