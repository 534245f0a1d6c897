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
