//! Placeholder until the key material module lands.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);
pub enum KeyType {
    Rsa,
    Ed25519,
}
pub struct Generated {
    pub private_key_pem: String,
    pub public_openssh: String,
    pub fingerprint: String,
}
pub struct Imported {
    pub key_type: KeyType,
    pub public_openssh: String,
    pub fingerprint: String,
}
pub fn generate(_k: KeyType) -> Result<Generated, KeyError> {
    Err(KeyError("not yet".into()))
}
pub fn import(_m: &[u8]) -> Result<Imported, KeyError> {
    Err(KeyError("not yet".into()))
}
