//! TEMPORARY stand-in until server/src/storage lands.
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(String);
pub struct BuiltinImage {
    pub root_image: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}
pub struct Storage {
    root: PathBuf,
}
impl Storage {
    pub fn new(d: &Path) -> Self {
        Storage {
            root: d.to_path_buf(),
        }
    }
    pub fn ensure_builtin(&self, _n: &str) -> Result<BuiltinImage, StorageError> {
        Err(StorageError("stub".into()))
    }
    pub fn create_volume_from(
        &self,
        _s: &Path,
        _v: &str,
        _n: u64,
    ) -> Result<PathBuf, StorageError> {
        Err(StorageError("stub".into()))
    }
    pub fn volume_path(&self, v: &str) -> PathBuf {
        self.root.join(v)
    }
    pub fn snapshot_path(&self, v: &str) -> PathBuf {
        self.root.join(v)
    }
    pub fn delete_volume(&self, _v: &str) -> Result<(), StorageError> {
        Ok(())
    }
    pub fn delete_snapshot(&self, _v: &str) -> Result<(), StorageError> {
        Ok(())
    }
    pub fn snapshot_volume(&self, _v: &str, _s: &str) -> Result<PathBuf, StorageError> {
        Ok(self.root.clone())
    }
}
