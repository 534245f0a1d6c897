-- The latest record a running consumer found, by its position check, to be
-- in the log it reads, when that is not the record before next_offset; NULL
-- when it is (or nothing was checked since). Written in the same transaction
-- as the offset. A consumer killed before its next check would resume with
-- only the record before next_offset to compare, and that record may come
-- from a topic recreated since the check: on resume it checks this one too
-- (README "A consumer exits 5").
ALTER TABLE kafka_offsets ADD COLUMN checked_offset INTEGER;
ALTER TABLE kafka_offsets ADD COLUMN checked_svix_id TEXT;
