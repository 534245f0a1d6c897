-- The referrals row no longer depends on the order one user's own events
-- arrive in (Svix retries deliver an older event after a newer one). An
-- event older than the row still writes none of its columns (last writer
-- wins), but it still counts for two things the rule dates by Clerk's
-- updated_at, not by arrival:
--
-- referrer_since: the updated_at of the event that named referrer_id. The
-- earliest event naming a referrer sets it; an older one applied later
-- replaces it (the one replaced is logged as the conflict).
ALTER TABLE referrals ADD COLUMN referrer_since INTEGER;

-- referral_code_broken_at: the updated_at of the latest event applied that
-- did not name the code the row names now (NULL: none known). An older
-- event naming that code moves referral_code_since back to itself when it
-- is later than this (the claim began there); an older event naming
-- another code, later than this, breaks the claim there.
ALTER TABLE referrals ADD COLUMN referral_code_broken_at INTEGER;

-- Rows written before: when their referrer was named is not known, so
-- referrer_since stays NULL, and no event replaces that referrer (set once,
-- as before; another named is the conflict). The row's updated_at would
-- only bound it from above: a late event older than the row but later
-- than the real naming would take the attribution from the true referrer.
-- A rebuild with `ctl replay` gives the exact dates.

-- Nor is it known whether an event older than a claim named its code or
-- another: no older event moves a claim of before back (dated as it was,
-- its holder stays). A break later than the claim still counts.
UPDATE referrals SET referral_code_broken_at = referral_code_since
 WHERE referral_code_since IS NOT NULL;
