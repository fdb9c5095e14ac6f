"""Signed job webhooks (Standard Webhooks): endpoints per API key, a transactional outbox of
deliveries written with the job's change, and the sender that posts them with retries."""
