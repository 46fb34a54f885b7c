"""``handgrad.nn.functional`` = ``torch.nn.functional``: PyTorch's import path for ``handgrad.functional``.

    import handgrad.nn.functional as F

Every public name of ``handgrad.functional`` (where the ops live) is available here.
"""

import handgrad.functional as _functional

globals().update({k: v for k, v in vars(_functional).items() if not k.startswith("_")})
