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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Timestamp(pub DateTime<Utc>);

/// Accepts RFC 3339 text (what we store) or epoch seconds (what test vectors use).
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::Text(s) => Timestamp::parse(&s),
            Raw::Number(n) => {
                DateTime::from_timestamp_millis((n * 1000.0).round() as i64).map(Timestamp)
            }
        };
        parsed.ok_or_else(|| serde::de::Error::custom("invalid timestamp"))
    }
}

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

    /// Seconds since the epoch, with a fraction only when there is one.
    pub fn to_epoch_seconds(&self) -> String {
        let ms = self.0.timestamp_millis();
        if ms % 1000 == 0 {
            (ms / 1000).to_string()
        } else {
            format!("{}", ms as f64 / 1000.0)
        }
    }

    /// `Tue, 29 Apr 2014 18:30:38 GMT`.
    pub fn to_http_date(&self) -> String {
        self.0.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
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
        assert_eq!(
            Timestamp::parse("0").unwrap().to_iso(),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
