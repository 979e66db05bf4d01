"""MAP training: one loop for every adapter method and task (:func:`fit`), evaluation helpers, checkpoints.

See :mod:`.loop` for the objective, schedule, early stopping, exact resumption and divergence handling.
"""

from .checkpoint import load_weights, save_weights, trainable_state
from .config import TrainConfig
from .loop import fit
from .microbatch import TrainingOutOfMemoryError
from .predict import evaluate, predict_probs
from .result import EpochRecord, TrainingDivergedError, TrainResult

__all__ = [
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingOutOfMemoryError",
    "evaluate",
    "fit",
    "load_weights",
    "predict_probs",
    "save_weights",
    "trainable_state",
]
