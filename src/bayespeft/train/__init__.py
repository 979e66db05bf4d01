"""MAP training: one loop for every adapter method and task (:func:`fit`), evaluation helpers, checkpoints.

See :mod:`.loop` for the objective, schedule, early stopping, exact resumption and divergence handling.
"""

from ..lazy import attach

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.train` loads no torch
__getattr__, __dir__, __all__ = attach(__name__, {
    "checkpoint": ["load_weights", "save_weights", "trainable_state"],
    "config": ["TrainConfig"],
    "loop": ["fit"],
    "microbatch": ["TrainingOutOfMemoryError"],
    "predict": ["evaluate", "predict_probs"],
    "result": ["EpochRecord", "TrainingDivergedError", "TrainResult"],
})
