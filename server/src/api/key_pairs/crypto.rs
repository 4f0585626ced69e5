//! Key material for EC2 key pairs: generating new key pairs (CreateKeyPair)
//! and parsing uploaded public keys (ImportKeyPair).
//!
//! Fingerprints follow what real EC2 reports, which differs by how the key
//! pair came to exist:
//!
//! | key type | CreateKeyPair                           | ImportKeyPair                       |
//! |----------|-----------------------------------------|-------------------------------------|
//! | RSA      | SHA-1 of the PKCS#8 DER private key     | MD5 of the SubjectPublicKeyInfo DER |
//! | ED25519  | base64 SHA-256 of the SSH wire key blob | same as CreateKeyPair               |
//!
//! Hex digests are lowercase and colon separated (`openssl sha1 -c`); the
//! base64 digest keeps its `=` padding, unlike `ssh-keygen -l`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use rand::rngs::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, PrivateKey, PublicKey};

/// Size of the RSA keys CreateKeyPair makes (EC2 only makes 2048-bit keys).
const GENERATED_RSA_BITS: usize = 2048;

/// RSA modulus sizes ImportKeyPair accepts, per the EC2 user guide.
const IMPORTABLE_RSA_BITS: [usize; 3] = [1024, 2048, 4096];

/// The `KeyType` of a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    /// The EC2 API spelling: `rsa` or `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    /// Parses the EC2 `KeyType` parameter; like EC2, the match is exact.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "rsa" => Ok(KeyType::Rsa),
            "ed25519" => Ok(KeyType::Ed25519),
            other => Err(KeyError::InvalidKeyType(other.to_owned())),
        }
    }
}

/// Checks the CreateKeyPair `KeyFormat` parameter. Only `pem` (the EC2
/// default) is produced; `ppk` is a valid EC2 value that this emulator does
/// not implement, so it gets its own error rather than "invalid value".
pub fn check_key_format(value: &str) -> Result<(), KeyError> {
    match value {
        "pem" => Ok(()),
        "ppk" => Err(KeyError::UnsupportedKeyFormat(value.to_owned())),
        other => Err(KeyError::InvalidKeyFormat(other.to_owned())),
    }
}

/// A freshly generated key pair, as CreateKeyPair returns it.
#[derive(Clone)]
pub struct Generated {
    /// The private key for `keyMaterial`: PKCS#1 PEM (`BEGIN RSA PRIVATE
    /// KEY`) for RSA, OpenSSH format (`BEGIN OPENSSH PRIVATE KEY`) for
    /// ED25519. Lines end in `\n`.
    pub private_key_pem: String,
    /// `ssh-rsa AAAA...` / `ssh-ed25519 AAAA...` without a comment; EC2's
    /// DescribeKeyPairs shows the key name as the comment, so the caller
    /// appends it.
    pub public_openssh: String,
    pub fingerprint: String,
}

// Written by hand so that logging a `Generated` never leaks the private key.
impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("private_key_pem", &"<redacted>")
            .field("public_openssh", &self.public_openssh)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// A public key accepted by ImportKeyPair.
#[derive(Debug, Clone)]
pub struct Imported {
    pub key_type: KeyType,
    /// Normalised to `ssh-rsa AAAA...` / `ssh-ed25519 AAAA...` without the
    /// uploaded comment, whatever format the key came in.
    pub public_openssh: String,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The `KeyType` parameter is neither `rsa` nor `ed25519`.
    #[error("invalid key type '{0}': expected 'rsa' or 'ed25519'")]
    InvalidKeyType(String),

    /// The `KeyFormat` parameter is neither `pem` nor `ppk`.
    #[error("invalid key format '{0}': expected 'pem' or 'ppk'")]
    InvalidKeyFormat(String),

    /// A valid EC2 key format that this emulator does not produce.
    #[error("key format '{0}' is not supported; only 'pem' is")]
    UnsupportedKeyFormat(String),

    /// The uploaded material is not a public key in any accepted format.
    #[error("not an OpenSSH, RFC 4716 or base64 DER public key ({0})")]
    InvalidPublicKey(String),

    /// A well-formed public key of an algorithm EC2 does not take.
    #[error("unsupported key algorithm '{0}': only RSA and ED25519 keys are accepted")]
    UnsupportedAlgorithm(String),

    /// An RSA key whose modulus is not one of the sizes EC2 accepts.
    #[error("unsupported RSA key length {0} bits: accepted lengths are 1024, 2048 and 4096")]
    UnsupportedRsaKeySize(usize),

    /// Generating or encoding key material failed: a server-side fault,
    /// not the caller's.
    #[error("internal error handling key material: {0}")]
    Internal(String),
}

/// Generates a key pair the way CreateKeyPair does (KeyFormat=pem).
pub fn generate(key_type: KeyType) -> Result<Generated, KeyError> {
    match key_type {
        KeyType::Rsa => generate_rsa(),
        KeyType::Ed25519 => generate_ed25519(),
    }
}

fn generate_rsa() -> Result<Generated, KeyError> {
    let key = RsaPrivateKey::new(&mut OsRng, GENERATED_RSA_BITS).map_err(internal)?;
    let private_key_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(internal)?
        .to_string();
    Ok(Generated {
        private_key_pem,
        public_openssh: rsa_openssh(key.as_ref())?,
        fingerprint: created_rsa_fingerprint(&key)?,
    })
}

fn generate_ed25519() -> Result<Generated, KeyError> {
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(internal)?;
    let private_key_pem = key
        .to_openssh(LineEnding::LF)
        .map_err(internal)?
        .to_string();
    let public = key.public_key();
    Ok(Generated {
        private_key_pem,
        public_openssh: public.to_openssh().map_err(internal)?,
        fingerprint: ed25519_fingerprint(public)?,
    })
}

fn internal(err: impl fmt::Display) -> KeyError {
    KeyError::Internal(err.to_string())
}

/// Parses ImportKeyPair's `PublicKeyMaterial`, already base64-decoded from
/// the request. EC2 documents three formats, all accepted here: an OpenSSH
/// public key line (as in `authorized_keys`, comment optional), an RFC 4716
/// `---- BEGIN SSH2 PUBLIC KEY ----` block, and base64-encoded DER
/// (SubjectPublicKeyInfo). Raw DER bytes are taken too.
pub fn import(material: &[u8]) -> Result<Imported, KeyError> {
    let Ok(text) = std::str::from_utf8(material) else {
        return import_der(material);
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("the key material is empty"));
    }
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY ----") {
        import_rfc4716(text)
    } else if text.starts_with("ssh-") || text.starts_with("ecdsa-") || text.contains(' ') {
        import_openssh(text)
    } else {
        let der = STANDARD
            .decode(text)
            .map_err(|_| invalid("unrecognised key format"))?;
        import_der(&der)
    }
}

fn invalid(reason: &str) -> KeyError {
    KeyError::InvalidPublicKey(reason.to_owned())
}

fn import_openssh(line: &str) -> Result<Imported, KeyError> {
    // One key only: a pasted authorized_keys file with several lines would
    // otherwise have the later keys swallowed as the first key's comment.
    if line.contains('\n') {
        return Err(invalid("more than one line of key material"));
    }
    let key =
        PublicKey::from_openssh(line).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
    import_key_data(key.key_data())
}

/// RFC 4716: BEGIN/END marker lines around optional `Header: value` lines
/// (a trailing `\` continues a header onto the next line) and the base64
/// body of the SSH wire-format key.
fn import_rfc4716(text: &str) -> Result<Imported, KeyError> {
    let mut lines = text.lines().map(str::trim);
    lines.next(); // the BEGIN marker, already checked by the caller
    let mut body = String::new();
    let mut continues_header = false;
    let mut ended = false;
    for line in lines {
        if line == "---- END SSH2 PUBLIC KEY ----" {
            ended = true;
            break;
        }
        if continues_header || line.contains(':') {
            continues_header = line.ends_with('\\');
        } else {
            body.push_str(line);
        }
    }
    if !ended {
        return Err(invalid("RFC 4716 key has no END marker"));
    }
    let blob = STANDARD
        .decode(&body)
        .map_err(|_| invalid("RFC 4716 key body is not valid base64"))?;
    let key =
        PublicKey::from_bytes(&blob).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
    import_key_data(key.key_data())
}

fn import_der(der: &[u8]) -> Result<Imported, KeyError> {
    if let Ok(key) = RsaPublicKey::from_public_key_der(der) {
        return import_rsa(key);
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
        return import_ed25519(Ed25519PublicKey::from(key));
    }
    Err(invalid("not an RSA or ED25519 DER public key"))
}

fn import_key_data(key_data: &KeyData) -> Result<Imported, KeyError> {
    match key_data {
        KeyData::Rsa(key) => {
            let n = mpint_to_biguint(&key.n)?;
            let e = mpint_to_biguint(&key.e)?;
            // Check the size before building the key: the rsa crate refuses
            // moduli over 4096 bits with a vaguer message.
            check_rsa_bits(n.bits())?;
            let key =
                RsaPublicKey::new(n, e).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
            import_rsa(key)
        }
        KeyData::Ed25519(key) => import_ed25519(*key),
        other => Err(KeyError::UnsupportedAlgorithm(
            other.algorithm().as_str().to_owned(),
        )),
    }
}

fn mpint_to_biguint(value: &ssh_key::Mpint) -> Result<BigUint, KeyError> {
    // RSA parameters are positive; a negative mpint is malformed.
    let bytes = value
        .as_positive_bytes()
        .ok_or_else(|| invalid("RSA key has a negative parameter"))?;
    Ok(BigUint::from_bytes_be(bytes))
}

fn check_rsa_bits(bits: usize) -> Result<(), KeyError> {
    if IMPORTABLE_RSA_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::UnsupportedRsaKeySize(bits))
    }
}

fn import_rsa(key: RsaPublicKey) -> Result<Imported, KeyError> {
    check_rsa_bits(key.n().bits())?;
    Ok(Imported {
        key_type: KeyType::Rsa,
        public_openssh: rsa_openssh(&key)?,
        fingerprint: imported_rsa_fingerprint(&key)?,
    })
}

fn import_ed25519(key: Ed25519PublicKey) -> Result<Imported, KeyError> {
    // ssh-key only checks the length; make sure the 32 bytes are really a
    // curve point so garbage is refused as it would be by EC2.
    ed25519_dalek::VerifyingKey::from_bytes(&key.0)
        .map_err(|_| invalid("ED25519 key is not a valid curve point"))?;
    let public = PublicKey::from(KeyData::Ed25519(key));
    Ok(Imported {
        key_type: KeyType::Ed25519,
        public_openssh: public
            .to_openssh()
            .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?,
        fingerprint: ed25519_fingerprint(&public)?,
    })
}

fn rsa_openssh(key: &RsaPublicKey) -> Result<String, KeyError> {
    let ssh = ssh_key::public::RsaPublicKey::try_from(key).map_err(internal)?;
    PublicKey::from(KeyData::Rsa(ssh))
        .to_openssh()
        .map_err(internal)
}

/// CreateKeyPair's RSA fingerprint: SHA-1 over the PKCS#8 DER encoding of
/// the private key, i.e.
/// `openssl pkcs8 -topk8 -nocrypt -outform DER | openssl sha1 -c`.
fn created_rsa_fingerprint(key: &RsaPrivateKey) -> Result<String, KeyError> {
    let der = key.to_pkcs8_der().map_err(internal)?;
    Ok(colon_hex(&Sha1::digest(der.as_bytes())))
}

/// ImportKeyPair's RSA fingerprint: MD5 over the SubjectPublicKeyInfo DER,
/// i.e. `openssl rsa -pubin -outform DER | openssl md5 -c`. (The API
/// reference says "RFC 4716 MD5", but EC2's user guide and its actual
/// output use the DER form, not the SSH wire blob.)
fn imported_rsa_fingerprint(key: &RsaPublicKey) -> Result<String, KeyError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
    Ok(colon_hex(&Md5::digest(der.as_bytes())))
}

/// ED25519 fingerprint for both created and imported keys: SHA-256 over the
/// SSH wire encoding of the public key, base64 with padding (what
/// `ssh-keygen -l -E sha256` prints, plus the trailing `=`).
fn ed25519_fingerprint(key: &PublicKey) -> Result<String, KeyError> {
    let blob = key.to_bytes().map_err(internal)?;
    Ok(STANDARD.encode(Sha256::digest(&blob)))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use rsa::pkcs1::DecodeRsaPrivateKey;

    use super::*;

    // Fixed vectors made once with OpenSSL 3.0 / OpenSSH 9.2:
    //   openssl genrsa -traditional -out k.pem 1024
    //   openssl pkcs8 -in k.pem -topk8 -nocrypt -outform DER | openssl sha1 -c
    //   ssh-keygen -y -f k.pem
    //   openssl rsa -in k.pem -pubout -outform DER | openssl md5 -c
    //   ssh-keygen -t ed25519 -C test@host; ssh-keygen -l -E sha256 -f ed.pub
    const RSA_1024_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXAIBAAKBgQCvf8nOosSleyuGUm5bj8lZrcmZiJpVXy4dxW1NcQUjLDQDw/Zy
5Tw2wSC2NvA0cNYGsmfzHAXpI4LXplqLabWZ4AvhtNU8CcHb/y4z+tP2MsA1noxz
EZVr9t1aMXRMkCStGCchChkj8ETo9OL4FGqHtlWFwbrx/NUb0bQlGVysmQIDAQAB
AoGAUxa5QO+nEoHCFZIpVYg52A+DhwE5sHmjp8y09xkvSXvAFJhOsg799x5wklRo
XSue6QTGWj9GPR7m75p++8pMg4jFsMqvCvl/dsFz4wS2eEm3NwcKWYH2oL4BVWyX
8LxC4Znk9b+u9v+sUp6Q3K2xWazui0JRikXZO0K4afuUnJECQQDcmuWUNnRF9ci4
JlvJg0prCmZdAKpv/lo6IL5K56kFmPCc5QDIpwgdchUNCJEQE49ztgTCARaK7bMI
cEZbm3XPAkEAy6g302VXpqs8W6KntQP/gXwuYiyRLzxKTFimNuYp3Ag0xN2afc0j
650uC2arRycniK95uzTRx79Vz2gAgLY5FwJAbKh+2/nWW38sVkfOffsE9KQytyxU
xsTpfCgUkqB4SCGEokLJmAttm9NNOxY1HU4FImFNBqGykMtzm3xxqz1vUQJBAMfk
1taxU/UNgfLXlhDAWdt4Tfaik+ZvIOYK5Sphg5iqnVDVyjvMTIOJBZa/MUJnlhA9
XBh54aZTkSBAjq3HLgUCQA4HN1pS8+bOVEASluFnWKmCylR1GOnx5ffNDquJwOVP
dvd6zd4Zp5DzM3iVerzxpaCSPsyA7JQtcqDF94L/E1k=
-----END RSA PRIVATE KEY-----
";
    const RSA_1024_SHA1_PKCS8: &str = "4c:71:02:5b:ee:d5:bc:39:02:ff:c8:15:24:ee:d5:ac:ad:55:1a:60";
    const RSA_1024_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCvf8nOosSleyuGUm5bj8lZrcmZiJpVXy4dxW1NcQUjLDQDw/Zy5Tw2wSC2NvA0cNYGsmfzHAXpI4LXplqLabWZ4AvhtNU8CcHb/y4z+tP2MsA1noxzEZVr9t1aMXRMkCStGCchChkj8ETo9OL4FGqHtlWFwbrx/NUb0bQlGVysmQ==";
    const RSA_1024_MD5_SPKI: &str = "27:1f:9d:84:aa:99:d0:37:8e:05:b9:a2:eb:33:9c:2e";
    const RSA_1024_SPKI_B64: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCvf8nOosSleyuGUm5bj8lZrcmZiJpVXy4dxW1NcQUjLDQDw/Zy5Tw2wSC2NvA0cNYGsmfzHAXpI4LXplqLabWZ4AvhtNU8CcHb/y4z+tP2MsA1noxzEZVr9t1aMXRMkCStGCchChkj8ETo9OL4FGqHtlWFwbrx/NUb0bQlGVysmQIDAQAB";
    const ED25519_PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE9KFI7bdz/5znEvYXfyxv4umZCvdKEX20C0oW4KLBeE";
    const ED25519_SHA256: &str = "3bIDsfO05No8Gk02Z0dSfohAHskOT0H4N0TdrEmV8zM=";

    // --- fixed vectors: run everywhere, no external tools needed ---

    #[test]
    fn created_rsa_fingerprint_matches_openssl_vector() {
        let key = RsaPrivateKey::from_pkcs1_pem(RSA_1024_PEM).unwrap();
        assert_eq!(created_rsa_fingerprint(&key).unwrap(), RSA_1024_SHA1_PKCS8);
    }

    #[test]
    fn imported_rsa_matches_openssl_vector() {
        let imported = import(format!("{RSA_1024_PUB} user@laptop\n").as_bytes()).unwrap();
        assert_eq!(imported.key_type, KeyType::Rsa);
        assert_eq!(imported.fingerprint, RSA_1024_MD5_SPKI);
        assert_eq!(imported.public_openssh, RSA_1024_PUB);
    }

    #[test]
    fn imported_ed25519_matches_ssh_keygen_vector() {
        let imported = import(format!("{ED25519_PUB} test@host\r\n").as_bytes()).unwrap();
        assert_eq!(imported.key_type, KeyType::Ed25519);
        assert_eq!(imported.fingerprint, ED25519_SHA256);
        assert_eq!(imported.public_openssh, ED25519_PUB);
    }

    #[test]
    fn imports_without_comment() {
        assert_eq!(
            import(ED25519_PUB.as_bytes()).unwrap().fingerprint,
            ED25519_SHA256
        );
    }

    #[test]
    fn imports_rfc4716() {
        let ssh2 = "---- BEGIN SSH2 PUBLIC KEY ----\n\
            Comment: \"1024-bit RSA, \\\n\
            converted from OpenSSH\"\n\
            AAAAB3NzaC1yc2EAAAADAQABAAAAgQCvf8nOosSleyuGUm5bj8lZrcmZiJpVXy4dxW1NcQ\n\
            UjLDQDw/Zy5Tw2wSC2NvA0cNYGsmfzHAXpI4LXplqLabWZ4AvhtNU8CcHb/y4z+tP2MsA1\n\
            noxzEZVr9t1aMXRMkCStGCchChkj8ETo9OL4FGqHtlWFwbrx/NUb0bQlGVysmQ==\n\
            ---- END SSH2 PUBLIC KEY ----\n";
        let imported = import(ssh2.as_bytes()).unwrap();
        assert_eq!(imported.fingerprint, RSA_1024_MD5_SPKI);
        assert_eq!(imported.public_openssh, RSA_1024_PUB);
    }

    #[test]
    fn imports_der() {
        let from_b64 = import(RSA_1024_SPKI_B64.as_bytes()).unwrap();
        assert_eq!(from_b64.fingerprint, RSA_1024_MD5_SPKI);
        assert_eq!(from_b64.public_openssh, RSA_1024_PUB);
        let raw = STANDARD.decode(RSA_1024_SPKI_B64).unwrap();
        assert_eq!(import(&raw).unwrap().fingerprint, RSA_1024_MD5_SPKI);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"   \n",
            b"hello world",
            b"ssh-rsa",
            b"ssh-rsa !!!notbase64!!!",
            b"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIE9KFI7bdz/5znEvYXfyxv4umZCvdKEX20C0oW4KLBeE",
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE9KFI7bdz",
            b"-----BEGIN RSA PRIVATE KEY-----",
            b"\xff\xfe\x00garbage",
            b"---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n",
        ] {
            let err = import(bad).unwrap_err();
            assert!(
                matches!(err, KeyError::InvalidPublicKey(_)),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn rejects_two_keys() {
        let two = format!("{ED25519_PUB} a\n{ED25519_PUB} b\n");
        assert!(matches!(
            import(two.as_bytes()),
            Err(KeyError::InvalidPublicKey(_))
        ));
    }

    #[test]
    fn rejects_ecdsa() {
        // A P-256 key made with `ssh-keygen -t ecdsa`.
        let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBM4LgDlZ49iVYPO8r80HABitgLlJDlNVp++yTA4TfcuwiIUBp8Xyuyjzq7sseVLPL9I5KkL8xNycZ/SOHsAu5Hs=";
        match import(ecdsa.as_bytes()) {
            Err(KeyError::UnsupportedAlgorithm(alg)) => assert_eq!(alg, "ecdsa-sha2-nistp256"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_unsupported_rsa_sizes() {
        for bits in [512, 1536, 3072, 8192] {
            // Only the modulus length matters here, so skip the (slow) prime
            // search and use an odd number of the right length.
            let n = (BigUint::from(1u8) << (bits - 1)) + 1u8;
            let key = RsaPublicKey::new_unchecked(n, BigUint::from(65537u32));
            let line = rsa_openssh(&key).unwrap();
            match import(line.as_bytes()) {
                Err(KeyError::UnsupportedRsaKeySize(got)) => assert_eq!(got, bits),
                other => panic!("{bits}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn parses_key_type_and_format() {
        assert_eq!("rsa".parse::<KeyType>().unwrap(), KeyType::Rsa);
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert!(matches!(
            "RSA".parse::<KeyType>(),
            Err(KeyError::InvalidKeyType(_))
        ));
        assert_eq!(KeyType::Ed25519.to_string(), "ed25519");
        assert!(check_key_format("pem").is_ok());
        assert!(matches!(
            check_key_format("ppk"),
            Err(KeyError::UnsupportedKeyFormat(_))
        ));
        assert!(matches!(
            check_key_format("der"),
            Err(KeyError::InvalidKeyFormat(_))
        ));
    }

    // --- cross-checks against the real tools, skipped where they are missing ---

    fn have(tool: &str) -> bool {
        let found = Command::new(tool)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("skipping: {tool} not installed");
        }
        found
    }

    /// Runs a command with `input` on stdin and returns its stdout.
    fn run(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The digest from `openssl sha1 -c` style output: `SHA1(stdin)= aa:bb`.
    fn openssl_digest(output: &[u8]) -> String {
        let text = String::from_utf8(output.to_vec()).unwrap();
        text.rsplit("= ").next().unwrap().trim().to_owned()
    }

    /// A file in a fresh private directory, removed on drop (ssh-keygen
    /// wants paths, and refuses private keys readable by others).
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            use std::os::unix::fs::OpenOptionsExt;
            let dir = std::env::temp_dir().join(format!(
                "ec2d-crypto-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(contents.as_bytes())
                .unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent().map(Path::to_path_buf) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    // RSA generation is slow in unoptimised builds, so one test generates a
    // single key and checks everything about it.
    #[test]
    fn generated_rsa_key_is_valid() {
        let generated = generate(KeyType::Rsa).unwrap();
        let pem = generated.private_key_pem.as_bytes();
        assert!(
            generated
                .private_key_pem
                .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
        );
        assert!(
            generated
                .private_key_pem
                .ends_with("-----END RSA PRIVATE KEY-----\n")
        );
        assert!(generated.public_openssh.starts_with("ssh-rsa AAAA"));
        assert_eq!(generated.fingerprint.len(), 59);
        assert!(!format!("{generated:?}").contains("PRIVATE"));

        if have("openssl") {
            let check = run("openssl", &["rsa", "-check", "-noout"], pem);
            assert!(String::from_utf8_lossy(&check).contains("RSA key ok"));

            let text = run("openssl", &["rsa", "-text", "-noout"], pem);
            assert!(String::from_utf8_lossy(&text).contains("Private-Key: (2048 bit"));

            let pkcs8 = run(
                "openssl",
                &[
                    "pkcs8", "-topk8", "-nocrypt", "-inform", "PEM", "-outform", "DER",
                ],
                pem,
            );
            let sha1 = openssl_digest(&run("openssl", &["sha1", "-c"], &pkcs8));
            assert_eq!(generated.fingerprint, sha1);
        }

        if have("ssh-keygen") {
            let file = TempFile::new("id_rsa", &generated.private_key_pem);
            let derived = run("ssh-keygen", &["-y", "-f", file.path()], b"");
            assert_eq!(
                String::from_utf8(derived).unwrap().trim(),
                generated.public_openssh
            );
        }
    }

    #[test]
    fn generated_ed25519_key_is_valid() {
        let generated = generate(KeyType::Ed25519).unwrap();
        assert!(
            generated
                .private_key_pem
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert!(generated.public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert_eq!(generated.fingerprint.len(), 44);
        assert!(generated.fingerprint.ends_with('='));
        // Importing the public half of a created ED25519 key gives the same
        // fingerprint, as on EC2.
        let imported = import(generated.public_openssh.as_bytes()).unwrap();
        assert_eq!(imported.fingerprint, generated.fingerprint);

        if have("ssh-keygen") {
            let file = TempFile::new("id_ed25519", &generated.private_key_pem);
            let derived = run("ssh-keygen", &["-y", "-f", file.path()], b"");
            assert_eq!(
                String::from_utf8(derived).unwrap().trim(),
                generated.public_openssh
            );

            let listing = run(
                "ssh-keygen",
                &["-l", "-E", "sha256", "-f", file.path()],
                b"",
            );
            let listing = String::from_utf8(listing).unwrap();
            let unpadded = generated.fingerprint.trim_end_matches('=');
            assert!(
                listing.contains(&format!("SHA256:{unpadded} ")),
                "{listing}"
            );
        }
    }

    #[test]
    fn imported_keys_match_openssl_and_ssh_keygen() {
        if !have("openssl") || !have("ssh-keygen") {
            return;
        }
        for size in ["1024", "2048", "4096"] {
            let pem = run("openssl", &["genrsa", "-traditional", size], b"");
            let pem = String::from_utf8(pem).unwrap();
            let file = TempFile::new("id_rsa", &pem);
            let public = run("ssh-keygen", &["-y", "-f", file.path()], b"");
            let spki = run(
                "openssl",
                &["rsa", "-pubout", "-outform", "DER"],
                pem.as_bytes(),
            );
            let md5 = openssl_digest(&run("openssl", &["md5", "-c"], &spki));

            let imported = import(&public).unwrap();
            assert_eq!(imported.key_type, KeyType::Rsa);
            assert_eq!(imported.fingerprint, md5, "{size}-bit key");
            assert_eq!(
                imported.public_openssh,
                String::from_utf8_lossy(&public).trim()
            );
        }

        let dir = TempFile::new("placeholder", "");
        let key_path = dir.0.with_file_name("id_ed25519");
        let key_path = key_path.to_str().unwrap();
        run(
            "ssh-keygen",
            &[
                "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", key_path,
            ],
            b"",
        );
        let public = std::fs::read(format!("{key_path}.pub")).unwrap();
        let listing = run("ssh-keygen", &["-l", "-E", "sha256", "-f", key_path], b"");
        let imported = import(&public).unwrap();
        assert_eq!(imported.key_type, KeyType::Ed25519);
        let unpadded = imported.fingerprint.trim_end_matches('=');
        assert!(
            String::from_utf8(listing)
                .unwrap()
                .contains(&format!("SHA256:{unpadded} ")),
            "ssh-keygen disagrees"
        );
    }
}
