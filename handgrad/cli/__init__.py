"""The ``handgrad`` console script: ``handgrad list`` and ``handgrad run NAME [options]``."""

from handgrad.cli.registry import Experiment, ExperimentError, discover, experiment

__all__ = ["Experiment", "ExperimentError", "discover", "experiment"]
