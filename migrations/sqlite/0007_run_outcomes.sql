-- A run records how it ended: refused plans (a mass removal, a stale saved plan) are runs too,
-- with why (`refusal`, NULL for an applied plan), and a watch pass that undid changes made
-- behind git's back says so (`drift`).
ALTER TABLE reconcile_runs ADD COLUMN refusal TEXT;
ALTER TABLE reconcile_runs ADD COLUMN drift BOOLEAN NOT NULL DEFAULT 0;
