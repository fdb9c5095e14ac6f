"""The S3 backend of :mod:`filejobs.storage`: uploads and outputs in an S3-compatible bucket.

``FILEJOBS_STORAGE_URL=s3://bucket/prefix`` (with ``FILEJOBS_S3_ENDPOINT_URL`` for a bucket not on
AWS). The client is boto3 (botocore's SigV4, retries and credential chain: the ``AWS_*``
variables, a profile, an instance role), called from worker threads; the event loop never waits
on it. See :mod:`.client` (requests, errors, metrics), :mod:`.sink` (an upload streamed into a
multipart upload) and :mod:`.store` (everything else).
"""

from filejobs.object_storage.store import S3Storage

__all__ = ["S3Storage"]
