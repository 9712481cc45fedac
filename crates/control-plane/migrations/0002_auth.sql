-- Authentication and authorization: service accounts, soft-deleted users, expiring and
-- revocable API keys, and the OIDC identities a user logs in with.

ALTER TABLE users ADD COLUMN user_type TEXT NOT NULL DEFAULT 'HUMAN';
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
CREATE INDEX api_keys_user ON api_keys (user_id);

-- One row per (provider, subject): the stable identity an ID token names. Users are matched
-- by identity first and by email only on their first login through a provider.
CREATE TABLE user_identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
