-- Every refund ends succeeded or failed. The payment API still reserves a refund here
-- when it accepts it; the projector then moves the row to the refund's outcome (from
-- payment.refunded and payment.refund_failed). A failed refund no longer counts as
-- reserved, so what it held can be refunded again. The status only moves forward
-- (pending < failed < succeeded: a success reported after the refund was declared
-- failed is reconciled as a success), whatever order the topics are read in.
ALTER TABLE payment_refunds
    ADD COLUMN status         text     NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'failed', 'succeeded')),
    ADD COLUMN status_rank    smallint NOT NULL DEFAULT 0,
    ADD COLUMN failure_code   text,
    ADD COLUMN failure_reason text,
    ADD COLUMN decided_at     timestamptz;
