-- The money auditor's wallets: each wallet's running figures, written with the checkpoint that
-- covers them (in its transaction) and read back in batches when events name a wallet the
-- auditor no longer holds in memory, so its memory does not grow with the number of wallets.
-- Rows of an older epoch are ignored, as in auditor_payments.
CREATE TABLE auditor_wallets (
    wallet_id  text   PRIMARY KEY,
    epoch      bigint NOT NULL,
    book       jsonb  NOT NULL    -- domain.audit_state.wallet_to_dict
);
