-- The operator's tables (paused jobs, run logs, alert episodes), as on SQLite
-- (migrations/sqlite/0020_job_pauses.sql, 0021_run_logs.sql, 0022_alert_episodes.sql on the
-- branch that brings them): the same columns, in PostgreSQL's dialect. Times are unix ms.

-- One row per job that was ever paused; `resumed_at IS NULL` while the pause is in force.
-- `catch_up` is a request for one catch-up run, taken once by whichever replica's scheduler
-- asks first.
CREATE TABLE job_pauses (
    job_id      TEXT    NOT NULL PRIMARY KEY,
    since       BIGINT  NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    resumed_at  BIGINT,
    resumed_by  TEXT,
    catch_up    BIGINT  NOT NULL DEFAULT 0
);

-- The lines a run logged, in order; they go with their run when it is pruned.
CREATE TABLE run_logs (
    run_id  BIGINT  NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    seq     BIGINT  NOT NULL,
    at      BIGINT  NOT NULL,
    level   TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    message TEXT    NOT NULL,
    fields  TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);

-- Alert episodes: at most one open episode per (rule, subject), across every replica.
CREATE TABLE alert_episodes (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    opened_at   BIGINT  NOT NULL,
    detail      TEXT    NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX alert_episodes_open ON alert_episodes (rule, subject) WHERE resolved_at IS NULL;
