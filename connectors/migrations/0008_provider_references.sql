-- A payment waiting on its provider shows until when (from PaymentCreated), and each operation
-- the provider has accepted shows its deadline beside the provider's reference: the row of a
-- charge or refund is written `pending` from PaymentOperationPending, then replaced by its
-- outcome (which keeps the reference and the deadline when it carries none).
ALTER TABLE payments ADD COLUMN deadline_at timestamptz;
ALTER TABLE payment_operations ADD COLUMN deadline_at timestamptz;
