"""Optimizers (``handgrad.optim`` = ``torch.optim``): SGD, Adam, AdamW, RMSprop and ``lr_scheduler``."""

from handgrad.optim import lr_scheduler
from handgrad.optim.adam import Adam, AdamW
from handgrad.optim.optimizer import Optimizer
from handgrad.optim.rmsprop import RMSprop
from handgrad.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
