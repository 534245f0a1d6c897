-- The Svix message id of the record just before next_offset, written in the
-- same transaction as the offset. A consumer resuming at next_offset re-reads
-- that record and compares: a topic deleted and recreated under the same
-- name, then refilled past the stored offset, holds a different record there
-- (README "A consumer exits 5"). NULL in rows written before this column.
ALTER TABLE kafka_offsets ADD COLUMN last_svix_id TEXT;
