"""Processors: what the service does to files. See :mod:`service.processors.base`."""

from service.processors.base import (
    Cancelled,
    Context,
    NoParams,
    Output,
    Processor,
    ProcessorError,
    RetryableError,
)

__all__ = [
    "Cancelled",
    "Context",
    "NoParams",
    "Output",
    "Processor",
    "ProcessorError",
    "RetryableError",
]
