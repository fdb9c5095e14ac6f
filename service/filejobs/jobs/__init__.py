"""The queue: the repository of job rows, run_job, the local worker pool, dispatch, the sweeper."""
