-- Every ended pause of a job, as on SQLite (migrations/sqlite/0024_pause_history.sql): written
-- by a trigger when a pause ends, in the resume's own statement; the newest 100 per job kept.
-- Times are unix milliseconds (UTC).
CREATE TABLE job_pause_history (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT    NOT NULL,
    since       BIGINT  NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    resumed_at  BIGINT  NOT NULL,
    resumed_by  TEXT    NOT NULL,
    catch_up    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX job_pause_history_job ON job_pause_history (job_id, id);

INSERT INTO job_pause_history (job_id, since, reason, actor, resumed_at, resumed_by, catch_up)
SELECT job_id, since, reason, actor, resumed_at, COALESCE(resumed_by, ''), catch_up
FROM job_pauses WHERE resumed_at IS NOT NULL;

CREATE FUNCTION job_pause_ended() RETURNS trigger AS $$
BEGIN
    INSERT INTO job_pause_history (job_id, since, reason, actor, resumed_at, resumed_by, catch_up)
    VALUES (NEW.job_id, NEW.since, NEW.reason, NEW.actor, NEW.resumed_at,
            COALESCE(NEW.resumed_by, ''), NEW.catch_up);
    DELETE FROM job_pause_history WHERE job_id = NEW.job_id AND id NOT IN (
        SELECT id FROM job_pause_history WHERE job_id = NEW.job_id ORDER BY id DESC LIMIT 100);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER job_pause_ended AFTER UPDATE OF resumed_at ON job_pauses
FOR EACH ROW WHEN (OLD.resumed_at IS NULL AND NEW.resumed_at IS NOT NULL)
EXECUTE FUNCTION job_pause_ended();
