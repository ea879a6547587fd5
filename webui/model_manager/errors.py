"""The model manager's two domain errors; `ui/` and `api/` turn them into messages and HTTP codes."""
from __future__ import annotations


class ModelNotFoundError(LookupError):
    """No checkpoint / VAE matches the name asked for; the message lists close names."""


class ModelLoadError(RuntimeError):
    """A model was found but could not be loaded; the message names the file and the cause."""
