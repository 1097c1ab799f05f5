-- Read views of the payment aggregate, projected from the payment.* topics; they can
-- be dropped and rebuilt from the log. Events of one payment arrive on several topics
-- (and so in any order): every writer is an upsert that only moves status forward.
CREATE TABLE payments (
    id              uuid PRIMARY KEY,
    user_id         uuid        NOT NULL,
    amount          bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    method          text        NOT NULL CHECK (method IN ('wallet', 'external')),
    wallet_id       uuid,
    provider        text,
    description     text,
    status          text        NOT NULL,
    status_rank     smallint    NOT NULL,
    reason_code     text,
    reason          text,
    refunded_amount bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX payments_user_id ON payments (user_id);

CREATE TABLE payment_operations (
    id             uuid PRIMARY KEY,
    payment_id     uuid        NOT NULL,
    kind           text        NOT NULL,
    status         text        NOT NULL,
    amount         bigint      NOT NULL,
    currency       char(3)     NOT NULL,
    source         text        NOT NULL,
    reference      text,
    failure_code   text,
    failure_reason text,
    inconsistent   boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    event_id       uuid        NOT NULL
);
CREATE INDEX payment_operations_payment ON payment_operations (payment_id, created_at);

-- Written by the payment API, not projected: the refunds it accepted, so that two
-- concurrent requests cannot both refund the same money.
CREATE TABLE payment_refunds (
    id         uuid PRIMARY KEY,
    payment_id uuid        NOT NULL,
    amount     bigint      NOT NULL CHECK (amount > 0),
    currency   char(3)     NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_refunds_payment ON payment_refunds (payment_id);

-- First response per Idempotency-Key, replayed on retries; a different body is a 409.
CREATE TABLE idempotency_keys (
    endpoint     text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, key)
);
