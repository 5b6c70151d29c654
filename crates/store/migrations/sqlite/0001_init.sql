-- The initial schema of the soarjobd state database.
--
-- Times are unix milliseconds (UTC). The DDL sticks to forms that PostgreSQL also accepts, apart
-- from `INTEGER PRIMARY KEY AUTOINCREMENT` (a PostgreSQL migration uses an identity column), so the
-- later port stays a transliteration. "trigger", "key" and "value" are keywords in some dialects,
-- so they are always quoted.

-- One row per run. A tick is claimed by inserting its row before anything runs.
-- AUTOINCREMENT keeps ids of pruned runs from being reused, so a run id in a log line or a
-- seen-set entry never points at a different, later run.
CREATE TABLE job_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT    NOT NULL,
    scheduled_at INTEGER NOT NULL,
    "trigger"    TEXT    NOT NULL CHECK ("trigger" IN ('schedule', 'catch_up', 'manual')),
    status       TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed',
                                                    'timed_out', 'cancelled', 'interrupted',
                                                    'skipped')),
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    duration_ms  INTEGER,
    message      TEXT,
    error        TEXT,
    stats        TEXT    NOT NULL DEFAULT '{}'
);

-- The claim invariant: a scheduled (or catch-up) tick of a job exists at most once. Manual runs
-- are requested by people and may share an instant, so they are outside the index.
CREATE UNIQUE INDEX job_runs_claim ON job_runs (job_id, scheduled_at) WHERE "trigger" <> 'manual';

-- History of one job, newest first; also serves last-run lookups and pruning by rank.
CREATE INDEX job_runs_history ON job_runs (job_id, started_at DESC, id DESC);

-- Startup recovery looks for rows left running; they are few, so a partial index stays tiny.
CREATE INDEX job_runs_running ON job_runs (status) WHERE status = 'running';

-- Last-success timestamps, several per job (SecOps `save_timestamp(..., key)`).
CREATE TABLE job_timestamps (
    job_id     TEXT    NOT NULL,
    "key"      TEXT    NOT NULL,
    value_ms   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, "key")
);

-- The per-job JSON key/value context; `value` holds one JSON document as text.
CREATE TABLE job_context (
    job_id     TEXT    NOT NULL,
    "key"      TEXT    NOT NULL,
    "value"    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, "key")
);

-- Seen-sets: items a job has processed (done) or is processing (attempting), per scope.
-- Pruning a run must not fail because an entry still names it, hence ON DELETE SET NULL.
CREATE TABLE job_seen (
    job_id     TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    item       TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('attempting', 'done')),
    run_id     INTEGER REFERENCES job_runs (id) ON DELETE SET NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, scope, item)
);

-- `seen_list`: the entries of a scope in one state, oldest first.
CREATE INDEX job_seen_by_state ON job_seen (job_id, scope, state, updated_at);

-- Deleting a run looks up the entries that reference it (foreign key action).
CREATE INDEX job_seen_run ON job_seen (run_id);
