"""Schemathesis against the service's own OpenAPI schema (``test_openapi_fuzz.py``)."""
