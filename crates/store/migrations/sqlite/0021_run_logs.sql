-- Every log event of a run (its tracing span), kept with the run: `soarjobd logs RUN_ID`.
-- seq orders the lines of one run (1, 2, ...; a cut leaves a gap, see the marker line). fields
-- holds the event's other fields as one JSON object. Lines go with their run when history is
-- pruned (ON DELETE CASCADE). Times are unix milliseconds (UTC).
CREATE TABLE run_logs (
    run_id  INTEGER NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    message TEXT    NOT NULL,
    fields  TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);
