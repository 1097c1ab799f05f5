-- The money auditor's checkpoint: its open state and the log offsets that state covers, in one
-- row written in one transaction, so a restart resumes from exactly where the state stands.
-- `epoch` grows with every full re-audit from offset 0, which replaces the checkpoint.
CREATE TABLE auditor_checkpoint (
    auditor     text        PRIMARY KEY,
    epoch       bigint      NOT NULL,
    offsets     jsonb       NOT NULL,  -- "topic/partition" -> next offset to read
    state       jsonb       NOT NULL,  -- domain.audit_state.ledger_to_dict
    written_at  timestamptz NOT NULL DEFAULT now()
);

-- Payments the auditor judged and let go of, read back when news names one again (a refund
-- weeks later). Written in the checkpoint's transaction; rows of an older epoch are ignored.
CREATE TABLE auditor_payments (
    payment_id  text   PRIMARY KEY,
    epoch       bigint NOT NULL,
    book        jsonb  NOT NULL    -- domain.audit_state.payment_to_dict
);
