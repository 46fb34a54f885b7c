"""``handgrad.functional``: the functional API, named and shaped like ``torch.nn.functional``.

Use as ``import handgrad.functional as F``. Each submodule groups one family (activations, conv, pooling,
normalisation, losses, ...); this file only re-exports them.
"""
from handgrad.functional.losses import (
    binary_cross_entropy, binary_cross_entropy_with_logits, huber_loss, kl_div, l1_loss, mse_loss, smooth_l1_loss,
)
from handgrad.functional.classification_losses import cross_entropy, nll_loss
from handgrad.functional.linear import linear
from handgrad.functional.conv import conv2d, conv_transpose2d
from handgrad.functional.pooling import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from handgrad.functional.metric_losses import (
    cdist, contrastive_loss, cosine_distance, cosine_similarity, distance, distance_matrix, euclidean_distance,
    pairwise_distance, squared_euclidean_distance, triplet_margin_loss,
)
from handgrad.functional.distillation import distillation_loss
from handgrad.functional.activation import (
    elu, gelu, leaky_relu, log_softmax, logsigmoid, relu, sigmoid, silu, softmax, softplus, tanh,
)
from handgrad.engine.ops.shape import pad
from handgrad.functional.normalization import batch_norm, group_norm, layer_norm
from handgrad.functional.dropout import dropout, dropout1d, dropout2d
from handgrad.functional.embedding import embedding, one_hot
from handgrad.functional.interpolate import interpolate, upsample
from handgrad.functional.attention import scaled_dot_product_attention
