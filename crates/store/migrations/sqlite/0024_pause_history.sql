-- Every ended pause of a job, for the job page's pause history (`job_pauses` keeps only the
-- pause in force or the last one). A row is written by the trigger below when a pause ends
-- (`resumed_at` goes from NULL to a time), in the same statement as the resume, so no resume is
-- recorded without its history row. The newest 100 per job are kept (pauses are people's
-- actions: this bounds a scripted pause/resume loop). Times are unix milliseconds (UTC).
CREATE TABLE job_pause_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL,
    since       INTEGER NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    resumed_at  INTEGER NOT NULL,
    resumed_by  TEXT    NOT NULL,
    catch_up    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_pause_history_job ON job_pause_history (job_id, id);

-- The last resume each job had before this table existed.
INSERT INTO job_pause_history (job_id, since, reason, actor, resumed_at, resumed_by, catch_up)
SELECT job_id, since, reason, actor, resumed_at, COALESCE(resumed_by, ''), catch_up
FROM job_pauses WHERE resumed_at IS NOT NULL;

CREATE TRIGGER job_pause_ended AFTER UPDATE OF resumed_at ON job_pauses
WHEN OLD.resumed_at IS NULL AND NEW.resumed_at IS NOT NULL
BEGIN
    INSERT INTO job_pause_history (job_id, since, reason, actor, resumed_at, resumed_by, catch_up)
    VALUES (NEW.job_id, NEW.since, NEW.reason, NEW.actor, NEW.resumed_at,
            COALESCE(NEW.resumed_by, ''), NEW.catch_up);
    DELETE FROM job_pause_history WHERE job_id = NEW.job_id AND id NOT IN (
        SELECT id FROM job_pause_history WHERE job_id = NEW.job_id ORDER BY id DESC LIMIT 100);
END;
