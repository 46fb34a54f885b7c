"""Deep metric learning: siamese networks, pair and triplet mining, batch losses, retrieval metrics."""

from handgrad.metric.evaluation import (
    best_threshold, map_at_r, pair_distances, pairwise_distances, recall_at_k, verification_accuracy,
    verification_pairs,
)
from handgrad.metric.losses import (
    ContrastiveLoss, SiameseNetwork, TripletMarginLoss, batch_contrastive_loss, batch_triplet_loss,
)
from handgrad.metric.mining import STRATEGIES, mine_pairs, mine_triplets
from handgrad.metric.sampling import PKBatchSampler, balanced_batch_indices, sample_pairs
