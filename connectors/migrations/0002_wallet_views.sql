-- Read views of the wallet aggregate, projected from wallet.movement_updates and
-- wallet.balance_update. They can be dropped and rebuilt from the log.
CREATE TABLE wallets (
    id               uuid PRIMARY KEY,
    user_id          uuid        NOT NULL,
    currency         char(3)     NOT NULL,
    balance          bigint      NOT NULL,
    version          bigint      NOT NULL,
    last_updated     timestamptz NOT NULL,
    last_event_id    uuid        NOT NULL,
    last_movement_id uuid
);
CREATE INDEX wallets_user_id ON wallets (user_id);

-- Immutable: a revert is a new row naming the movement it reverts.
CREATE TABLE wallet_movements (
    seq                 bigserial   UNIQUE,
    id                  uuid PRIMARY KEY,
    wallet_id           uuid        NOT NULL,
    type                text        NOT NULL CHECK (type IN ('income', 'expense')),
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    status              text        NOT NULL CHECK (status IN ('applied', 'rejected')),
    reason_code         text,
    reason              text,
    balance_after       bigint      NOT NULL,
    wallet_version      bigint      NOT NULL,
    reverts_movement_id uuid,
    reference           text,
    description         text,
    payment_id          uuid,
    created_at          timestamptz NOT NULL,
    event_id            uuid        NOT NULL
);
CREATE INDEX wallet_movements_history ON wallet_movements (wallet_id, seq DESC);
CREATE UNIQUE INDEX wallet_movements_one_revert ON wallet_movements (reverts_movement_id)
    WHERE status = 'applied' AND reverts_movement_id IS NOT NULL;
