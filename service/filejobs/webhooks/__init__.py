"""Signed job webhooks (Standard Webhooks): endpoints per API key, a transactional outbox of
deliveries written with the job's change, and the sender that posts them with retries.

httpx and standardwebhooks (about 9 MB of memory together) load when the first URL is checked or
the first delivery is sent, not in every API process at startup: most deployments send none.
"""
