-- clerk-sync schema, version 1. Table names are the contract (DESIGN.md §2);
-- columns may grow in later migrations. All *_at columns are ms since epoch.

CREATE TABLE users (
  id              TEXT PRIMARY KEY,
  email           TEXT,
  first_name      TEXT,
  last_name       TEXT,
  username        TEXT,
  image_url       TEXT,
  role            TEXT NOT NULL DEFAULT 'spacer',
  banned          INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER,
  updated_at      INTEGER NOT NULL DEFAULT 0,
  last_sign_in_at INTEGER,
  deleted_at      INTEGER
);

-- The user's own code and who invited them; referrer_id is set once.
CREATE TABLE referrals (
  user_id       TEXT PRIMARY KEY,
  referral_code TEXT UNIQUE,
  referrer_id   TEXT,
  updated_at    INTEGER NOT NULL DEFAULT 0,
  deleted_at    INTEGER
);
CREATE INDEX referrals_by_referrer ON referrals(referrer_id);

-- g2a_balance is exact decimal text, never a float.
CREATE TABLE balances (
  user_id        TEXT PRIMARY KEY,
  points_balance INTEGER NOT NULL DEFAULT 0,
  g2a_balance    TEXT NOT NULL DEFAULT '0',
  nft_count      INTEGER NOT NULL DEFAULT 0,
  updated_at     INTEGER NOT NULL DEFAULT 0,
  deleted_at     INTEGER
);

CREATE TABLE sessions (
  id             TEXT PRIMARY KEY,
  user_id        TEXT NOT NULL,
  status         TEXT NOT NULL,
  created_at     INTEGER,
  updated_at     INTEGER NOT NULL DEFAULT 0,
  last_active_at INTEGER,
  expire_at      INTEGER,
  ended_at       INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Idempotency ledger: one row per (projection, svix-id) ever applied,
-- including stale and skipped events, so a redelivery is a no-op.
CREATE TABLE applied_events (
  projection  TEXT NOT NULL,
  svix_id     TEXT NOT NULL,
  type        TEXT NOT NULL,
  user_id     TEXT,
  outcome     TEXT NOT NULL,
  topic       TEXT NOT NULL,
  partition   INTEGER NOT NULL,
  "offset"    INTEGER NOT NULL,
  applied_at  INTEGER NOT NULL,
  PRIMARY KEY (projection, svix_id)
) WITHOUT ROWID;

-- The next Kafka offset to read, written in the same transaction as the rows.
CREATE TABLE kafka_offsets (
  projection  TEXT NOT NULL,
  topic       TEXT NOT NULL,
  partition   INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (projection, topic, partition)
) WITHOUT ROWID;

-- Events that could not be decoded or mapped; resolved_at is set on re-drive.
CREATE TABLE dead_letters (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  projection  TEXT NOT NULL,
  topic       TEXT NOT NULL,
  partition   INTEGER NOT NULL,
  "offset"    INTEGER NOT NULL,
  svix_id     TEXT,
  type        TEXT,
  reason      TEXT NOT NULL,
  payload     BLOB NOT NULL,
  created_at  INTEGER NOT NULL,
  resolved_at INTEGER
);
CREATE INDEX dead_letters_pending ON dead_letters(projection, resolved_at);
