-- Paused jobs (`soarjobd pause`, the admin API). One row per job that was ever paused: a row
-- with resumed_at NULL is a pause in force. The last resume is kept (resumed_at, resumed_by) so
-- that the ticks that fell inside the pause are not counted as missed after a restart, and
-- catch_up records a `resume --catch-up` until the scheduler has made its one catch-up run.
-- Times are unix milliseconds (UTC). Portable DDL (PostgreSQL accepts it as written, with
-- BIGINT for INTEGER if wanted).
CREATE TABLE job_pauses (
    job_id      TEXT    NOT NULL PRIMARY KEY,
    since       INTEGER NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    resumed_at  INTEGER,
    resumed_by  TEXT,
    catch_up    INTEGER NOT NULL DEFAULT 0
);
