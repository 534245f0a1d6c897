-- State that stays bounded (README "Bounded state").
-- A skipped outcome leaves no ledger row: whether a projection skips an event
-- depends on the event alone, so a redelivery is skipped again all the same.
DELETE FROM applied_events WHERE outcome = 'skipped';

-- One dead letter per (projection, svix-id): a redelivery of an event that
-- cannot be decoded or mapped adds no second one. Older files may hold such
-- duplicates: keep the first of each.
DELETE FROM dead_letters
 WHERE svix_id IS NOT NULL
   AND id NOT IN (SELECT min(id) FROM dead_letters WHERE svix_id IS NOT NULL GROUP BY projection, svix_id);
CREATE UNIQUE INDEX dead_letters_event ON dead_letters(projection, svix_id);
