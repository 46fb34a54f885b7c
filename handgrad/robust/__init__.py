"""Learning from weak supervision: robust regression (DeepGUM, Tukey, Huber) and noisy-label classification."""

from handgrad.robust.gum import GaussianUniformMixture
from handgrad.robust.losses import gum_loss, mad_scale, tukey_biweight_loss
from handgrad.robust.noisy_labels import (
    FASHION_CLASSES, FASHION_CONFUSING, NOISE_TYPES, NoisyLabelModel, confusion_from_pairs, corrupt_labels,
    joint_posterior, log_likelihood, noisy_label_nll, noisy_label_probs, transition_matrices, update_confusion,
)
