//! IMDSv2 session tokens.
//!
//! A token is `base64url(version ‖ expiry ‖ nonce ‖ HMAC-SHA256(key, version ‖ expiry ‖ nonce ‖
//! instance id))`. The instance id is inside the MAC but not in the token, so a token says nothing
//! about its owner, and another instance presenting it fails the MAC. The expiry is milliseconds on
//! the service's monotonic clock. Being self-validating, tokens need no store: nothing for a guest to
//! fill, nothing to sweep.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
const BODY_LEN: usize = 1 + 8 + NONCE_LEN;
const TOKEN_LEN: usize = BODY_LEN + MAC_LEN;
const BLOCK: usize = 64;

/// The secret that signs tokens, and the origin of their clock. One per ec2d process.
pub struct TokenKey {
    key: [u8; 32],
    epoch: Instant,
}

impl TokenKey {
    /// A key from the OS-seeded generator; the epoch is now.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            key,
            epoch: Instant::now(),
        }
    }

    /// A token for `instance_id`, valid for `ttl_secs` from `now`.
    pub fn issue(&self, instance_id: &str, now: Instant, ttl_secs: u64) -> String {
        let expiry = self.millis(now + Duration::from_secs(ttl_secs));
        let mut body = [0u8; BODY_LEN];
        body[0] = VERSION;
        body[1..9].copy_from_slice(&expiry.to_be_bytes());
        rand::thread_rng().fill_bytes(&mut body[9..]);
        let mac = self.mac(&body, instance_id);
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.extend_from_slice(&body);
        token.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Whether `token` was issued by this key for `instance_id` and has not expired at `now`.
    pub fn verify(&self, token: &str, instance_id: &str, now: Instant) -> bool {
        // Longer input than any token cannot be one; refuse before decoding it.
        if token.len() > TOKEN_LEN * 2 {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        if raw.len() != TOKEN_LEN || raw[0] != VERSION {
            return false;
        }
        let (body, mac) = raw.split_at(BODY_LEN);
        if !constant_time_eq(&self.mac(body, instance_id), mac) {
            return false;
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&body[1..9]);
        self.millis(now) < u64::from_be_bytes(expiry)
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// HMAC-SHA256 (RFC 2104) over the token body and the owner. The id is length-prefixed so no
    /// body/id split can collide with another.
    fn mac(&self, body: &[u8], instance_id: &str) -> [u8; MAC_LEN] {
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for (i, k) in self.key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(body)
            .chain_update((instance_id.len() as u64).to_be_bytes())
            .chain_update(instance_id.as_bytes())
            .finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }
}

/// Comparison whose time does not depend on where the inputs differ, so a guest cannot forge a MAC
/// byte by byte from response timings.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
