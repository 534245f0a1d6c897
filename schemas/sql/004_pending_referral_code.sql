-- The referral code a user's latest applied event names while another user
-- holds it (codes are unique): the row keeps the code it had, and the user
-- gets this one when the holder's own event gives it up. Two users' events
-- sit in different partitions, with no order between them, so a release can
-- be applied after the claim it made room for; without this the claim was
-- lost until the user's next update, and the live table differed from a
-- replay that met the two events the other way round.
ALTER TABLE referrals ADD COLUMN pending_referral_code TEXT;
CREATE INDEX referrals_by_pending_code ON referrals(pending_referral_code) WHERE pending_referral_code IS NOT NULL;
