"""forged: the daemon (scheduler, job queue, ingest watcher, control socket)."""
