-- The process that claimed each run row, so that a `running` row can be told live or dead from
-- another process: a second soarjobd process (a `run-once` next to the daemon) must neither
-- mark a live run `interrupted` nor overlap with it. NULL in rows written before this
-- migration: such a row counts as dead, as every `running` row did at startup before.
--
-- owner_start is `<boot id>:<process start time>` (a recycled pid is not the owner);
-- owner_nonce is one per opened store (a store closed and reopened inside one process).
ALTER TABLE job_runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE job_runs ADD COLUMN owner_host TEXT;
ALTER TABLE job_runs ADD COLUMN owner_start TEXT;
ALTER TABLE job_runs ADD COLUMN owner_nonce TEXT;
