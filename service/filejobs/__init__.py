"""filejobs: upload a file, get 202 Accepted, process it in the background."""

__version__ = "0.1.0"
