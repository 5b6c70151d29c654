-- The store (and process) that claimed each run row, so that a `running` row can be told live
-- or dead from another process: a second soarjobd process (a `run-once` next to the daemon)
-- must neither mark a live run `interrupted` nor overlap with it. NULL in rows written before
-- this migration: such a row counts as dead, as every `running` row did at startup before.
--
-- owner_nonce names the owner's lock file `<database>.owners/<nonce>`, which the owner holds
-- locked (flock) while it is open: that lock, not the pid, is what makes the row live.
-- owner_pid and owner_host are for people (messages, `history --json`).
ALTER TABLE job_runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE job_runs ADD COLUMN owner_host TEXT;
ALTER TABLE job_runs ADD COLUMN owner_nonce TEXT;
