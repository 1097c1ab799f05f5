-- Payment search (GET /api/v1/payments): newest first by (created_at, id), the id breaking
-- ties so a page boundary is stable. One index for an operator's search of everyone, one
-- for a user's own payments; the second's prefix serves every lookup the old user_id index did.
CREATE INDEX payments_created ON payments (created_at, id);
CREATE INDEX payments_user_created ON payments (user_id, created_at, id);
DROP INDEX payments_user_id;
