-- The processes of runs in progress, so that a restart can kill what a crashed owner left.
--
-- One row per run whose program was started (today: `exec` jobs). It is written before the
-- program starts (pgid still NULL) and again right after (pgid filled in), and deleted once every
-- process of the run is gone. A row that outlives its owner process names what the next daemon
-- start must kill, and the guards it needs to never kill anything else:
--   host, boot_id       the processes can only still exist on the same host in the same boot;
--   owner_pid,          the daemon or run-once process that started the run; while it is
--   owner_start_ticks   alive (same pid AND same start time) the run is its business;
--   pgid,               the run's process group; a group member is killed only if its
--   leader_start_ticks  environment carries `token` (or it is the leader, same start time);
--   token               a random value put in the program's environment as
--                       SOARJOBD_RUN_TOKEN, unique to this run;
--   cgroup              the run's own cgroup v2 directory, when the daemon could create one.
-- Times are unix milliseconds (UTC), like everywhere else.
CREATE TABLE run_processes (
    run_id             INTEGER PRIMARY KEY REFERENCES job_runs (id) ON DELETE CASCADE,
    host               TEXT    NOT NULL,
    boot_id            TEXT    NOT NULL,
    owner_pid          INTEGER NOT NULL,
    owner_start_ticks  INTEGER NOT NULL,
    pgid               INTEGER,
    leader_start_ticks INTEGER,
    token              TEXT    NOT NULL,
    cgroup             TEXT,
    recorded_at        INTEGER NOT NULL
);
