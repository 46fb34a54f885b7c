"""Optimizers (``handgrad.optim`` = ``torch.optim``): SGD, Adam, AdamW, RMSprop, Adadelta, Adagrad, NAdam,
RAdam, LBFGS and ``lr_scheduler``."""

from handgrad.optim import lr_scheduler
from handgrad.optim.adam import Adam, AdamW
from handgrad.optim.optimizer import Optimizer
from handgrad.optim.rmsprop import RMSprop
from handgrad.optim.adadelta import Adadelta
from handgrad.optim.adagrad import Adagrad
from handgrad.optim.lbfgs import LBFGS
from handgrad.optim.nadam import NAdam, RAdam
from handgrad.optim.sgd import SGD

__all__ = [
    "LBFGS", "SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "NAdam", "Optimizer", "RAdam", "RMSprop", "lr_scheduler",
]
