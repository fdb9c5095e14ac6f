"""The resources one service instance runs on, made in the app's lifespan and handed out by deps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from filejobs.db import Database
from filejobs.events.feed import ChangeFeed
from filejobs.events.hub import ChangeHub
from filejobs.events.key_watch import KeyWatch
from filejobs.jobs.backpressure import Admission, RateLimiter
from filejobs.jobs.dispatch import Dispatcher
from filejobs.jobs.fast_read import JobReader
from filejobs.jobs.group_commit import GroupCommitter
from filejobs.jobs.local_dispatch import LocalDispatcher
from filejobs.jobs.sweep_lock import SweepLock, sweep_lock
from filejobs.jobs.worker import LocalWorker
from filejobs.jobs.worker_process import WorkerProcess
from filejobs.keys import AuthGate
from filejobs.processors.registry import Registry, build_registry
from filejobs.schema_version import at_head
from filejobs.settings import Settings
from filejobs.shutdown import Shutdown
from filejobs.storage import LocalStorage, Storage, open_storage
from filejobs.tus.local import LocalUploadStore
from filejobs.tus.receive import Hashes
from filejobs.tus.store import UploadStore
from filejobs.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: Storage
    registry: Registry
    dispatcher: Dispatcher
    hub: ChangeHub
    feed: ChangeFeed
    key_watch: KeyWatch
    sweep_lock: SweepLock
    auth: AuthGate
    rate_limiter: RateLimiter
    admission: Admission
    reader: JobReader
    committer: GroupCommitter
    webhooks: WebhookSender
    #: Resumable (tus) uploads in progress, and the running SHA-256 of those this process sees.
    uploads: UploadStore
    upload_hashes: Hashes
    worker: LocalWorker | None = None
    #: Set on SIGTERM/SIGINT: uploads still receiving at its cutoff are answered 503.
    shutdown: Shutdown = field(default_factory=Shutdown)

    def close(self) -> None:
        """Give up the sweeper lock, close the broker connections and the database pool."""
        self.committer.close()
        self.sweep_lock.release()
        self.reader.close()
        close = getattr(self.dispatcher, "close", None)
        if close is not None:
            close()
        self.db.dispose()


def upload_store(settings: Settings, db: Database, storage: Storage) -> UploadStore:
    """Resumable uploads beside the storage: in the data directory, or in the bucket (resumable
    through any API node, held across nodes by the database's advisory locks)."""
    if not storage.on_disk:  # the S3 backend (imported only then: boto3 is large)
        from filejobs.object_storage import S3Storage
        from filejobs.tus.locks import upload_locks
        from filejobs.tus.s3 import S3UploadStore

        assert isinstance(storage, S3Storage)
        return S3UploadStore(
            storage, upload_locks(db, settings.data_dir), expiry=settings.upload_expiry.total_seconds()
        )
    assert isinstance(storage, LocalStorage)
    return LocalUploadStore(settings.data_dir / "tus", storage)


def build_services(settings: Settings, *, dispatcher: Dispatcher | None = None) -> Services:
    """Create the data directory, migrate (unless told not to) and wire everything together.

    With ``dispatcher`` given (tests), no worker pool is started: the caller runs jobs itself.
    """
    if settings.backend == "celery" and not settings.broker_url:
        raise ValueError("FILEJOBS_BACKEND=celery needs FILEJOBS_BROKER_URL (redis://… or amqp://…).")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    db = Database(url)
    if settings.auto_migrate and not at_head(db):
        from filejobs.migrate import upgrade  # Alembic only when there is something to do

        upgrade(url)
    storage = open_storage(settings)
    registry = build_registry(settings.processors)
    hub = ChangeHub()
    feed = ChangeFeed(db, poll_interval=settings.events_poll_interval, lookback=settings.events_lookback)
    hub.listen(feed.hint)
    lock = sweep_lock(db, settings.data_dir)
    webhooks = WebhookSender(db, settings, leader=lambda: lock.held, on_change=hub.notify)
    hub.listen(webhooks.job_changed)
    feed.on_notify(webhooks.wake)
    auth = AuthGate(db, always=settings.require_auth)
    worker = None
    committer = GroupCommitter(db, sync_dir=storage.sync_uploads_dir)
    if dispatcher is None:
        if settings.backend == "celery":
            from filejobs.jobs.celery_dispatch import CeleryDispatcher

            dispatcher = CeleryDispatcher(settings, db)
        else:
            if settings.runs_worker_process:
                dispatcher = WorkerProcess(settings, on_change=hub.notify)
            elif settings.workers > 0:
                worker = LocalWorker(
                    db=db,
                    storage=storage,
                    registry=registry,
                    settings=settings,
                    on_change=hub.notify,
                    committer=committer,  # jobs' final statuses share the new rows' commits
                )
            if dispatcher is None:
                dispatcher = LocalDispatcher(worker)
    return Services(
        settings=settings,
        db=db,
        storage=storage,
        registry=registry,
        dispatcher=dispatcher,
        hub=hub,
        feed=feed,
        key_watch=KeyWatch(db, feed, auth, interval=settings.events_key_check),
        worker=worker,
        sweep_lock=lock,
        auth=auth,
        rate_limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
        admission=Admission(settings, db),
        reader=JobReader(db),
        committer=committer,
        webhooks=webhooks,
        uploads=upload_store(settings, db, storage),
        upload_hashes=Hashes(),
    )
