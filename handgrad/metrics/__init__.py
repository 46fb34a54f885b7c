"""Evaluation metrics."""

from handgrad.metrics.bleu import corpus_bleu, tokenize_13a
from handgrad.metrics.sequence import exact_match, token_accuracy
