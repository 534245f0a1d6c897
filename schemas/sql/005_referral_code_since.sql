-- Who holds a referral code no longer depends on the order the consumer met
-- two users' events (different partitions, no order between them): a code
-- belongs to the live user whose claim of it began first, and a deleted user
-- holds none. referral_code_since is when the user's claim of the code it
-- names now (held in referral_code, or waited for in pending_referral_code)
-- began: the updated_at of the first of its applied events that have named
-- that code without a break. Ties go to the smaller user id. The others
-- naming the code wait for it in pending_referral_code, which for a deleted
-- user keeps the code it named (a deleted user waits for nothing).
ALTER TABLE referrals ADD COLUMN referral_code_since INTEGER;

-- Rows written before: when a claim began is not known, its row's
-- updated_at stands in (a rebuild with `ctl replay` gives the exact value).
UPDATE referrals SET referral_code_since = updated_at
 WHERE referral_code IS NOT NULL OR pending_referral_code IS NOT NULL;

-- A user held the code it had while it waited for another, and a deleted
-- user kept its code: both give it up now.
UPDATE referrals SET pending_referral_code = coalesce(pending_referral_code, referral_code), referral_code = NULL
 WHERE referral_code IS NOT NULL AND (pending_referral_code IS NOT NULL OR deleted_at IS NOT NULL);

-- A code no live user holds goes to the live user that waits for it since
-- the earliest. The set is computed before any row changes (the subquery
-- does not depend on the row), so each code gets one holder.
UPDATE referrals SET referral_code = pending_referral_code, pending_referral_code = NULL
 WHERE user_id IN (
   SELECT user_id FROM (
     SELECT user_id, pending_referral_code AS code,
            row_number() OVER (PARTITION BY pending_referral_code ORDER BY referral_code_since, user_id) AS n
       FROM referrals WHERE pending_referral_code IS NOT NULL AND deleted_at IS NULL)
    WHERE n = 1 AND code NOT IN (SELECT referral_code FROM referrals WHERE referral_code IS NOT NULL));

-- A live user that holds a code while others wait for it keeps it: the
-- earlier rule gave it the code first, and that stands. Its claim is dated
-- just before the earliest waiter's when its row is newer, so the rule holds
-- from here on (a later claim is measured against the holder alone).
UPDATE referrals SET referral_code_since = coalesce(
    (SELECT min(w.referral_code_since) - 1 FROM referrals AS w
      WHERE w.pending_referral_code = referrals.referral_code AND w.deleted_at IS NULL
        AND w.referral_code_since <= referrals.referral_code_since),
    referral_code_since)
 WHERE referral_code IS NOT NULL;
