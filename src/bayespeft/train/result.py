"""What a training run reports: per-epoch records, the run summary, and the divergence error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BayesPeftError


class TrainingDivergedError(BayesPeftError, RuntimeError):
    """The training (or validation) loss became NaN/Inf. The last good checkpoint on disk is left untouched."""

    def __init__(self, message: str, epoch: int, step: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclass
class EpochRecord:
    """One epoch (1-based ``epoch``). Losses are mean cross-entropy (nats) per example; ``train_loss`` includes label
    smoothing if configured; ``lr`` is the learning rate of the last step of the epoch; times in seconds."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    steps: int
    train_examples: int
    train_time_s: float
    val_time_s: float
    epoch_time_s: float
    improved: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """Summary of :func:`bayespeft.train.fit` (also written to ``run_dir/history.json``).

    ``best_epoch`` is 1-based (the epoch whose weights the model holds at the end); ``best_metric`` is the monitored
    value there (None without a val loader). ``train_time_s`` is the wall time of all epochs (training steps plus
    per-epoch validation), summed over resumptions. Throughputs are examples per second: training over the train
    steps only (all epochs, including those before a resume), inference on the validation loader with the final
    (best) weights, data loading included. ``peak_memory_bytes`` is
    ``torch.cuda.max_memory_allocated`` on CUDA (``peak_memory_kind="cuda_max_allocated"``) or the peak resident set
    size of the whole process on CPU (``"process_max_rss"``). ``val_metrics`` holds
    :func:`bayespeft.metrics.classification_metrics` + ``loss`` of the final model on the validation loader.
    ``micro_batch_size``: the micro-batch (examples per forward/backward pass) that ``auto_batch_size`` settled on
    after out-of-memory errors, gradients accumulated over each batch; None = whole batches (no such error).
    """

    history: list[EpochRecord]
    monitor: str
    best_epoch: int
    best_metric: float | None
    epochs_run: int
    stopped_early: bool
    train_time_s: float
    train_throughput: float
    inference_throughput: float | None
    peak_memory_bytes: int
    peak_memory_kind: str
    device: str
    precision: str
    n_trainable_params: int
    total_steps: int
    resumed_from_epoch: int | None
    checkpoint_dir: str
    val_metrics: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    micro_batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [h.to_dict() if isinstance(h, EpochRecord) else h for h in self.history]
        return d
