"""Resumable uploads: a tus 1.0.0 server (https://tus.io) at ``/v1/uploads``.

- :mod:`~filejobs.tus.protocol`: the headers and their parsers;
- :mod:`~filejobs.tus.metadata`: the ``Upload-Metadata`` keys filejobs reads, checked at creation;
- :mod:`~filejobs.tus.store`: the upload store's interface; :mod:`~filejobs.tus.local` the one in
  the data directory;
- :mod:`~filejobs.tus.receive`: a PATCH body appended durably (fsync before an offset is answered);
- :mod:`~filejobs.tus.complete`: a finished upload becomes exactly one job, through the intake;
- :mod:`~filejobs.tus.handlers`: the operations the routes (:mod:`filejobs.api.routes.uploads`) call.
"""
