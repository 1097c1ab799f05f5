-- Idempotency keys belong to the caller who sent them (another caller's same key is
-- another key), bind the request they first came with, and expire. A key used again
-- after it expired starts a new generation, and the ids derived from it change with it,
-- so rows are replaced, never deleted while their ids could be reused.
-- The old rows were global (no caller): they cannot be attributed and are dropped.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    caller       text        NOT NULL,
    key          text        NOT NULL,
    endpoint     text        NOT NULL,
    request_hash text        NOT NULL,
    generation   integer     NOT NULL DEFAULT 1,
    status_code  integer,
    response     jsonb,
    locked_at    timestamptz,  -- set while a request with this key runs
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (caller, key)
);
