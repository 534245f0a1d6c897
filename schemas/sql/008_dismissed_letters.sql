-- When the operator dismissed the letter (`ctl dead-letters dismiss`: its
-- event left out of the projection by decision, never applied); NULL for a
-- letter pending or re-driven. resolved_at alone could not tell the two
-- apart, so a swap-in that replaced the letter with the rebuilt file's
-- pending copy of the same event brought it back against that decision.
ALTER TABLE dead_letters ADD COLUMN dismissed_at INTEGER;

-- Letters dismissed before this column: `dismiss` wrote its note into the
-- reason, which nothing else writes that way.
UPDATE dead_letters SET dismissed_at = resolved_at
 WHERE resolved_at IS NOT NULL AND instr(reason, ' (dismissed: ') > 0;

-- One dead letter per record without a svix-id (another tool's write, or a
-- tombstone), by its place: the unique index on svix-id never holds NULLs,
-- so each re-read of such a record (a consumer rewound, an evicted member's
-- late batch, a swap-in's consumer meeting it again) added another pending
-- letter. Older files may hold such duplicates: keep one of each, a
-- resolved one (dismissed) before a pending one, else the first.
DELETE FROM dead_letters
 WHERE svix_id IS NULL
   AND id NOT IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY projection, topic, partition, "offset"
                                                             ORDER BY resolved_at IS NULL, id) AS n
                                    FROM dead_letters WHERE svix_id IS NULL)
                   WHERE n = 1);
CREATE UNIQUE INDEX dead_letters_place ON dead_letters(projection, topic, partition, "offset") WHERE svix_id IS NULL;
