//! Scalar types the generated shapes use beyond Rust's own.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A model `blob`: base64 on the wire, bytes in Rust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Blob)
            .map_err(serde::de::Error::custom)
    }
}

/// A model `timestamp`, always UTC with millisecond precision on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub DateTime<Utc>);

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp(DateTime::<Utc>::UNIX_EPOCH)
    }
}

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// `2026-11-26T10:00:00.000Z`, as EC2 prints timestamps.
    pub fn to_iso(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// ISO 8601 / RFC 3339, or epoch seconds as botocore sometimes sends.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(t.with_timezone(&Utc)));
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Some(Timestamp(t.and_utc()));
        }
        let secs: f64 = s.parse().ok()?;
        DateTime::from_timestamp_millis((secs * 1000.0) as i64).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_millis_and_z() {
        let t = Timestamp::parse("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(t.to_iso(), "2026-11-26T10:00:00.000Z");
        assert_eq!(Timestamp::parse("0").unwrap().to_iso(), "1970-01-01T00:00:00.000Z");
    }
}
