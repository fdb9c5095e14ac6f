"""Processors: what the service does to files. See :mod:`filejobs.processors.base`."""

from filejobs.processors.base import (
    Cancelled,
    Context,
    Limits,
    NoParams,
    Output,
    Processor,
    ProcessorError,
    RetryableError,
)

__all__ = [
    "Cancelled",
    "Context",
    "Limits",
    "NoParams",
    "Output",
    "Processor",
    "ProcessorError",
    "RetryableError",
]
