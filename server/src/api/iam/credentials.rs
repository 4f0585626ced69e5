//! Temporary credentials for an instance's role: what IMDS serves under
//! `iam/security-credentials/<role>`, and what ec2d accepts back when they sign a request.
//!
//! A set is an access key `ASIA…` (20 characters), a 40-character secret, a session token and
//! an expiration six hours after issue. The same set is served for an hour, then a fresh one
//! replaces it; the old one stays valid until its own expiry, so a client that cached it is
//! never cut off early. EC2 promises new credentials at least five minutes before the old
//! ones expire and in practice rotates them well before; an hour does both.
//!
//! Issued sets are stored in the account's global scope, keyed by access key, so they survive
//! a restart and SigV4 verification can find them. Like AWS access keys, the key encodes its
//! account (bits 7..47 of the base32-decoded bytes after the prefix), so verification looks a
//! key up in one account without scanning all of them. A set is revoked (deleted) when its
//! association ends: disassociation, replacement, or termination of the instance.

use std::time::SystemTime;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, SessionKey, SessionKeys};
use crate::error::ApiError;
use crate::imds;
use crate::protocol::types::Timestamp;
use crate::store::{GLOBAL, Store, Tx};

pub const KIND: &str = "iam-instance-credentials";

/// How long a set is valid, as EC2 issues instance-profile credentials.
pub const LIFETIME: Duration = Duration::hours(6);
/// How long a set is served before a fresh one replaces it.
pub const ROTATE_AFTER: Duration = Duration::hours(1);
/// New credentials are available at least this long before the served ones expire (EC2's
/// documented minimum); with the numbers above it never binds, but it guards any change.
pub const MIN_NOTICE: Duration = Duration::minutes(5);

/// One issued set, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    pub expiration: Timestamp,
    pub last_updated: Timestamp,
    /// Whose credentials these are: the instance, where it runs, and through what.
    pub region: String,
    pub instance_id: String,
    pub association_id: String,
    pub role_name: String,
    pub profile_arn: String,
    pub profile_id: String,
}

impl Issued {
    /// As IMDS serves them.
    pub fn to_imds(&self) -> imds::Credentials {
        imds::Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            token: self.token.clone(),
            expiration: self.expiration.0,
            last_updated: self.last_updated.0,
        }
    }
}

/// What a set of credentials is for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub region: &'a str,
    pub instance_id: &'a str,
    pub association_id: &'a str,
    pub role_name: &'a str,
    pub profile_arn: &'a str,
    pub profile_id: &'a str,
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8; 10]) -> String {
    let mut bits: u128 = 0;
    for b in bytes {
        bits = (bits << 8) | u128::from(*b);
    }
    (0..16)
        .rev()
        .map(|i| char::from(BASE32[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

fn base32_decode(text: &str) -> Option<[u8; 10]> {
    if text.len() != 16 {
        return None;
    }
    let mut bits: u128 = 0;
    for c in text.bytes() {
        let v = BASE32.iter().position(|x| *x == c)?;
        bits = (bits << 5) | v as u128;
    }
    let mut out = [0u8; 10];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (bits >> (8 * (9 - i))) as u8;
    }
    Some(out)
}

/// A new temporary access key for an account: `ASIA`, then 16 base32 characters whose first
/// six bytes carry the account in bits 7..47, as AWS access keys do.
pub fn new_access_key(account: &str) -> Result<String, ApiError> {
    let account: u64 = account
        .parse()
        .ok()
        .filter(|a| *a < (1 << 40))
        .ok_or_else(|| ApiError::internal("account id is not 12 digits"))?;
    let mut bytes = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut bytes);
    let head = (account << 7) | u64::from(bytes[5] & 0x7f);
    bytes[..6].copy_from_slice(&head.to_be_bytes()[2..]);
    Ok(format!("ASIA{}", base32_encode(&bytes)))
}

/// The account a temporary access key belongs to, or `None` if it is not one of ours.
pub fn account_of_access_key(key: &str) -> Option<String> {
    let bytes = base32_decode(key.strip_prefix("ASIA")?)?;
    let mut head = [0u8; 8];
    head[2..].copy_from_slice(&bytes[..6]);
    let account = (u64::from_be_bytes(head) & 0x7fff_ffff_ff80) >> 7;
    (account < 1_000_000_000_000).then(|| format!("{account:012}"))
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The set to serve for `subject` at `now`: the one named by `current` while it is fresh and
/// still for the same role and association, else a newly issued one (the caller records its
/// key as current). Expired sets of the account are dropped on the way.
pub fn current_or_new(
    tx: &Tx<'_>,
    subject: &Subject<'_>,
    current: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Issued, ApiError> {
    if let Some(key) = current
        && let Some(c) = tx.get_in::<Issued>(GLOBAL, KIND, key)?
        && c.role_name == subject.role_name
        && c.profile_arn == subject.profile_arn
        && c.association_id == subject.association_id
        && now < c.last_updated.0 + ROTATE_AFTER
        && now + MIN_NOTICE < c.expiration.0
    {
        return Ok(c);
    }
    for old in tx.list_in::<Issued>(GLOBAL, KIND)? {
        if old.expiration.0 <= now {
            tx.delete_in(GLOBAL, KIND, &old.access_key_id)?;
        }
    }
    let mut access_key_id = new_access_key(&tx.account)?;
    while tx.get_in::<Issued>(GLOBAL, KIND, &access_key_id)?.is_some() {
        access_key_id = new_access_key(&tx.account)?;
    }
    let issued = Issued {
        access_key_id,
        // 30 bytes are 40 base64 characters, the length of an AWS secret key.
        secret_access_key: random_b64(30),
        token: random_b64(129),
        expiration: Timestamp(now + LIFETIME),
        last_updated: Timestamp(now),
        region: subject.region.to_string(),
        instance_id: subject.instance_id.to_string(),
        association_id: subject.association_id.to_string(),
        role_name: subject.role_name.to_string(),
        profile_arn: subject.profile_arn.to_string(),
        profile_id: subject.profile_id.to_string(),
    };
    tx.insert_in(GLOBAL, KIND, &issued.access_key_id, &issued)?;
    tracing::info!(
        instance = subject.instance_id,
        role = subject.role_name,
        access_key = %issued.access_key_id,
        "issued instance role credentials"
    );
    Ok(issued)
}

/// Revokes every set issued through an association, so its keys stop working at once.
pub fn revoke_association(tx: &Tx<'_>, association_id: &str) -> Result<(), ApiError> {
    for c in tx.list_in::<Issued>(GLOBAL, KIND)? {
        if c.association_id == association_id {
            tx.delete_in(GLOBAL, KIND, &c.access_key_id)?;
            tracing::info!(access_key = %c.access_key_id, instance = %c.instance_id, "revoked instance role credentials");
        }
    }
    Ok(())
}

/// Temporary keys as SigV4 verification finds them: in the store, in the account the key
/// names.
pub struct StoreSessionKeys<'a>(pub &'a Store);

impl SessionKeys for StoreSessionKeys<'_> {
    fn lookup(&self, access_key: &str) -> Result<Option<SessionKey>, AuthError> {
        let Some(account) = account_of_access_key(access_key) else {
            return Ok(None);
        };
        let issued = self
            .0
            .transaction(&account, GLOBAL, |tx| {
                tx.get_in::<Issued>(GLOBAL, KIND, access_key)
            })
            .map_err(|e| AuthError::Internal(e.message))?;
        Ok(issued.map(|i| SessionKey {
            secret: i.secret_access_key,
            token: i.token,
            account,
            expiration: SystemTime::from(i.expiration.0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_carry_their_account() {
        for account in [
            "000000000000",
            "123456789012",
            "999999999999",
            "111122223333",
        ] {
            let key = new_access_key(account).unwrap();
            assert_eq!(key.len(), 20, "{key}");
            assert!(key.starts_with("ASIA"));
            assert!(key[4..].bytes().all(|b| BASE32.contains(&b)), "{key}");
            assert_eq!(account_of_access_key(&key).as_deref(), Some(account));
        }
        assert_eq!(account_of_access_key("AKIAIOSFODNN7EXAMPLE"), None);
        assert_eq!(account_of_access_key("ASIAshort"), None);
        assert_eq!(account_of_access_key("ASIA0000000000000000"), None);
    }

    #[test]
    fn base32_round_trips() {
        let b = [0, 1, 2, 3, 250, 251, 252, 253, 254, 255];
        assert_eq!(base32_decode(&base32_encode(&b)), Some(b));
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, store)
    }

    const SUBJECT: Subject<'static> = Subject {
        region: "us-east-1",
        instance_id: "i-0123456789abcdef0",
        association_id: "iip-assoc-0123456789abcdef0",
        role_name: "web",
        profile_arn: "arn:aws:iam::000000000000:instance-profile/web",
        profile_id: "AIPAAAAAAAAAAAAAAAAAA",
    };

    #[test]
    fn sets_are_reused_then_rotated_well_before_expiry() {
        let (_d, store) = store();
        let t0 = Utc::now();
        let first = store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(tx, &SUBJECT, None, t0)
            })
            .unwrap();
        assert_eq!(first.secret_access_key.len(), 40);
        assert_eq!(first.expiration.0 - first.last_updated.0, LIFETIME);
        let again = store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(
                    tx,
                    &SUBJECT,
                    Some(&first.access_key_id),
                    t0 + Duration::minutes(59),
                )
            })
            .unwrap();
        assert_eq!(again, first);
        let later = t0 + Duration::minutes(61);
        let next = store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(tx, &SUBJECT, Some(&first.access_key_id), later)
            })
            .unwrap();
        assert_ne!(next.access_key_id, first.access_key_id);
        assert!(next.expiration.0 > first.expiration.0);
        // The new set is available hours before the old one expires, and the old one still
        // verifies until then.
        assert!(first.expiration.0 - later > MIN_NOTICE);
        let keys = StoreSessionKeys(&store);
        assert!(keys.lookup(&first.access_key_id).unwrap().is_some());
        // A different role means a different set at once.
        let other = Subject {
            role_name: "admin",
            ..SUBJECT
        };
        let swapped = store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(tx, &other, Some(&next.access_key_id), later)
            })
            .unwrap();
        assert_ne!(swapped.access_key_id, next.access_key_id);
        // Revocation removes every set of the association.
        store
            .transaction("000000000000", "us-east-1", |tx| {
                revoke_association(tx, SUBJECT.association_id)
            })
            .unwrap();
        for k in [&first, &next, &swapped] {
            assert!(keys.lookup(&k.access_key_id).unwrap().is_none());
        }
    }

    #[test]
    fn expired_sets_are_dropped_when_new_ones_are_issued() {
        let (_d, store) = store();
        let t0 = Utc::now() - Duration::hours(7);
        let old = store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(tx, &SUBJECT, None, t0)
            })
            .unwrap();
        store
            .transaction("000000000000", "us-east-1", |tx| {
                current_or_new(tx, &SUBJECT, Some(&old.access_key_id), Utc::now())
            })
            .unwrap();
        assert!(
            StoreSessionKeys(&store)
                .lookup(&old.access_key_id)
                .unwrap()
                .is_none()
        );
    }
}
