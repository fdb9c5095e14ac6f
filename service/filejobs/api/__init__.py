"""The HTTP API: thin routes over the functions in :mod:`filejobs.jobs`."""
