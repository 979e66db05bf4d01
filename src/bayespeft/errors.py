"""Exception types that are the user's to fix; the CLI prints them as one clean line instead of a traceback
(set ``BAYESPEFT_DEBUG=1`` to get the traceback)."""

from __future__ import annotations


class BayesPeftError(Exception):
    """Base class for errors about user input (config, data, checkpoints)."""


class CheckpointError(BayesPeftError, ValueError):
    """A checkpoint is missing, corrupt or does not match the model."""


class CheckpointMismatchError(CheckpointError):
    """An intact checkpoint of another model or adapter than the one built (i.e. from another config)."""


class CorruptFileError(CheckpointError):
    """A file whose contents no longer match the SHA-256 recorded when it was written."""


class RunError(BayesPeftError):
    """A run directory or output location that cannot be used: a resume target that is not a resumable run of
    the config, an output directory or results CSV that cannot be written."""


class DataError(BayesPeftError, ValueError):
    """Dataset files that cannot be fetched, verified or read (the message names the file and what to do)."""


class HubError(BayesPeftError, FileNotFoundError):
    """Pretrained weights or a dataset that are not on this machine and could not be fetched from the Hugging Face
    hub now (offline, no network, unknown or gated id); the message names the hub id and the cache directory."""


# ConfigError and UnknownNameError derive from ValueError; missing files raise FileNotFoundError.
USER_ERRORS: tuple[type[BaseException], ...] = (BayesPeftError, FileNotFoundError, NotADirectoryError, ValueError, KeyError)
