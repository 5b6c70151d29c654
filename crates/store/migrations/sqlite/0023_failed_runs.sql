-- Failed runs are kept by rules of their own (`history.keep_failed_runs` and
-- `keep_failed_days`): this partial index finds a job's newest failed runs without reading its
-- other rows, so each prune step stays cheap however long the history is.
CREATE INDEX job_runs_failed ON job_runs (job_id, started_at DESC, id DESC)
    WHERE status IN ('failed', 'timed_out', 'interrupted');
