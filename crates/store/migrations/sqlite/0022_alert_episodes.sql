-- Alert episodes: one row from the moment a rule starts firing for a subject (a job id, or a
-- job file for job_invalid) until it resolves. Notifications are sent when a row is opened and
-- when it is resolved, never per run; keeping the rows makes a restart neither re-send an open
-- episode nor forget it. At most one open episode per (rule, subject).
CREATE TABLE alert_episodes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    opened_at   INTEGER NOT NULL,
    detail      TEXT    NOT NULL,
    resolved_at INTEGER
);

CREATE UNIQUE INDEX alert_episodes_open ON alert_episodes (rule, subject) WHERE resolved_at IS NULL;
