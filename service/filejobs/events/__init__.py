"""Live job changes for Server-Sent Events: where they come from (:mod:`.feed`), what one stream
waits on (:mod:`.subscription`) and how they go on the wire (:mod:`.wire`)."""
