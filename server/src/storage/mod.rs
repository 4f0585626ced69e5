//! EBS volumes, snapshots and built-in AMIs as files in the data directory.
//!
//! Layout under `data_dir`:
//! - `images/<name>-<version>/{root.img,manifest.json}`: built-in AMIs, built by `fixtures/` recipes
//!   on first use (see [`Storage::ensure_builtin`]); `images/.cache/` holds downloaded packages.
//! - `volumes/<vol-id>.img`: one raw disk image per EBS volume, sparse.
//! - `snapshots/<snap-id>.img`: one raw image per snapshot, sparse.
//!
//! Everything is synchronous and std-only (plus `cp` and e2fsprogs); callers on the async side run
//! it on a blocking thread. Files appear atomically: each is written under a temporary name and
//! then linked or renamed into place, so a crash never leaves a half-written volume under a real id.

mod images;
mod sparse;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use images::{BuiltinImage, Manifest, locate_fixtures};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {kind} id {id:?}")]
    InvalidId { kind: &'static str, id: String },
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("requested size {requested} bytes is smaller than the source image ({minimum} bytes)")]
    TooSmall { requested: u64, minimum: u64 },
    #[error("no built-in AMI recipe {0}")]
    UnknownBuiltin(String),
    #[error("fixtures directory (built-in AMI recipes) not found; searched: {searched}")]
    FixturesNotFound { searched: String },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("built-in AMI {name}: {reason}")]
    BadImage { name: String, reason: String },
}

impl StorageError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Volumes, snapshots and built-in AMIs under one data directory. Share it behind an `Arc`; the
/// methods take `&self` and are safe to call from several threads.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    /// Recipes directory override; `None` means [`locate_fixtures`].
    fixtures: Option<PathBuf>,
    /// Build built-in AMIs with a kernel and initrd (`build --with-kernel`), for the microVM engine.
    boot_files: bool,
    /// Serialises built-in AMI builds within the process (a file lock covers other processes).
    build_lock: Mutex<()>,
    /// Image directories whose root image hash was already checked by this process.
    verified: Mutex<HashSet<PathBuf>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
    fn dir(self) -> &'static str {
        match self {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        }
    }
}

impl Storage {
    /// Opens (creating if needed) the storage under `data_dir`, and removes temporary files that a
    /// crash in the middle of a copy or build left behind.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = data_dir.into();
        for sub in ["images", "volumes", "snapshots"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| StorageError::io("create", &dir, e))?;
        }
        let storage = Storage {
            root,
            fixtures: None,
            boot_files: false,
            build_lock: Mutex::new(()),
            verified: Mutex::new(HashSet::new()),
        };
        storage.remove_leftovers()?;
        Ok(storage)
    }

    /// Uses `dir` as the recipes directory instead of searching for it.
    pub fn with_fixtures_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fixtures = Some(dir.into());
        self
    }

    /// Builds (and looks up) built-in AMIs with their kernel and initrd, which the microVM engine
    /// boots; without this they hold only the root image, enough for the sandbox engine. The two
    /// variants have different recipe versions and are cached side by side.
    pub fn with_boot_files(mut self, yes: bool) -> Self {
        self.boot_files = yes;
        self
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of volume `vol_id`'s disk image (whether or not it exists).
    pub fn volume_path(&self, vol_id: &str) -> Result<PathBuf, StorageError> {
        self.path(Kind::Volume, vol_id)
    }

    /// Path of snapshot `snap_id`'s image (whether or not it exists).
    pub fn snapshot_path(&self, snap_id: &str) -> Result<PathBuf, StorageError> {
        self.path(Kind::Snapshot, snap_id)
    }

    /// Creates volume `vol_id` as a sparse copy of the raw image `src`, `size_bytes` long. If that
    /// is larger than `src` and `src` holds an ext2/3/4 filesystem, the filesystem is grown to fill
    /// the volume. The copy's time follows the data in `src`, not its size or `size_bytes`.
    pub fn create_volume_from(
        &self,
        src: &Path,
        vol_id: &str,
        size_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let dest = self.volume_path(vol_id)?;
        let src_len = fs::metadata(src)
            .map_err(|e| StorageError::io("stat", src, e))?
            .len();
        if size_bytes < src_len {
            return Err(StorageError::TooSmall {
                requested: size_bytes,
                minimum: src_len,
            });
        }
        self.create(Kind::Volume, vol_id, &dest, |tmp| {
            sparse::sparse_copy(src, tmp)?;
            if size_bytes > src_len {
                set_len(tmp, size_bytes)?;
                if sparse::is_ext_filesystem(tmp)? {
                    sparse::grow_ext4(tmp)?;
                }
            }
            Ok(())
        })
    }

    /// Creates volume `vol_id` from snapshot `snap_id`; see [`Storage::create_volume_from`].
    pub fn volume_from_snapshot(
        &self,
        snap_id: &str,
        vol_id: &str,
        size_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let src = self.existing(Kind::Snapshot, snap_id)?;
        self.create_volume_from(&src, vol_id, size_bytes)
    }

    /// Creates an unformatted volume of `size_bytes` zeros (a hole, no blocks allocated).
    pub fn create_empty_volume(
        &self,
        vol_id: &str,
        size_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let dest = self.volume_path(vol_id)?;
        self.create(Kind::Volume, vol_id, &dest, |tmp| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)
                .map_err(|e| StorageError::io("create", tmp, e))?;
            set_len(tmp, size_bytes)
        })
    }

    /// Copies volume `vol_id` into snapshot `snap_id` (sparse). The caller makes the volume
    /// consistent first (instance stopped, or the guest filesystem synced/frozen): this is a plain
    /// copy of whatever the file holds at the moment.
    pub fn snapshot_volume(&self, vol_id: &str, snap_id: &str) -> Result<PathBuf, StorageError> {
        let src = self.existing(Kind::Volume, vol_id)?;
        let dest = self.snapshot_path(snap_id)?;
        self.create(Kind::Snapshot, snap_id, &dest, |tmp| {
            sparse::sparse_copy(&src, tmp)
        })
    }

    /// Deletes volume `vol_id`'s image. [`StorageError::NotFound`] if it does not exist.
    pub fn delete_volume(&self, vol_id: &str) -> Result<(), StorageError> {
        self.delete(Kind::Volume, vol_id)
    }

    /// Deletes snapshot `snap_id`'s image. [`StorageError::NotFound`] if it does not exist.
    pub fn delete_snapshot(&self, snap_id: &str) -> Result<(), StorageError> {
        self.delete(Kind::Snapshot, snap_id)
    }

    /// Apparent size of volume `vol_id` in bytes.
    pub fn volume_size(&self, vol_id: &str) -> Result<u64, StorageError> {
        let path = self.existing(Kind::Volume, vol_id)?;
        Ok(fs::metadata(&path)
            .map_err(|e| StorageError::io("stat", &path, e))?
            .len())
    }

    /// Ids of all volumes on disk, sorted (for reconciling with the state after a crash).
    pub fn list_volumes(&self) -> Result<Vec<String>, StorageError> {
        self.list(Kind::Volume)
    }

    /// Ids of all snapshots on disk, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<String>, StorageError> {
        self.list(Kind::Snapshot)
    }

    fn path(&self, kind: Kind, id: &str) -> Result<PathBuf, StorageError> {
        if !valid_id(id) {
            return Err(StorageError::InvalidId {
                kind: kind.name(),
                id: id.to_string(),
            });
        }
        Ok(self.root.join(kind.dir()).join(format!("{id}.img")))
    }

    fn existing(&self, kind: Kind, id: &str) -> Result<PathBuf, StorageError> {
        let path = self.path(kind, id)?;
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound {
                kind: kind.name(),
                id: id.to_string(),
            }),
            Err(e) => Err(StorageError::io("stat", &path, e)),
        }
    }

    /// Builds `dest` under a temporary name with `fill`, then links it into place without
    /// replacing an existing file, so a concurrent or earlier create with the same id wins cleanly.
    fn create(
        &self,
        kind: Kind,
        id: &str,
        dest: &Path,
        fill: impl FnOnce(&Path) -> Result<(), StorageError>,
    ) -> Result<PathBuf, StorageError> {
        let already = || StorageError::AlreadyExists {
            kind: kind.name(),
            id: id.to_string(),
        };
        if dest.exists() {
            return Err(already());
        }
        // Unique per call, so two creates of the same id never share a temporary file.
        let tmp = dest.with_file_name(format!(".{id}.{}.tmp", uuid_like()));
        let result = fill(&tmp)
            .and_then(|()| {
                // Guest data: readable by ec2d only.
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
                    .map_err(|e| StorageError::io("chmod", &tmp, e))
            })
            .and_then(|()| match fs::hard_link(&tmp, dest) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already()),
                Err(e) => Err(StorageError::io("link", dest, e)),
            });
        let _ = fs::remove_file(&tmp);
        result.map(|()| dest.to_path_buf())
    }

    fn delete(&self, kind: Kind, id: &str) -> Result<(), StorageError> {
        let path = self.path(kind, id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound {
                kind: kind.name(),
                id: id.to_string(),
            }),
            Err(e) => Err(StorageError::io("remove", &path, e)),
        }
    }

    fn list(&self, kind: Kind) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join(kind.dir());
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| StorageError::io("list", &dir, e))? {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".img").filter(|id| valid_id(id)) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes `.…tmp` files in volumes/ and snapshots/ and `.build-*` directories in images/:
    /// only an interrupted copy or build leaves them, and nothing refers to them.
    fn remove_leftovers(&self) -> Result<(), StorageError> {
        for sub in ["volumes", "snapshots", "images"] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(|e| StorageError::io("list", &dir, e))? {
                let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let removed = if name.starts_with('.') && name.ends_with(".tmp") {
                    fs::remove_file(&path)
                } else if sub == "images" && name.starts_with(".build-") {
                    fs::remove_dir_all(&path)
                } else {
                    continue;
                };
                match removed {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed leftover from an interrupted operation")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover")
                    }
                }
            }
        }
        Ok(())
    }
}

/// Ids name files: ASCII letters, digits, `-` and `_`, not starting with `-`, at most 64 bytes.
/// EC2 ids (`vol-0123…`, `snap-…`) fit; path separators and dots cannot get in.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn set_len(path: &Path, len: u64) -> Result<(), StorageError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    f.set_len(len)
        .map_err(|e| StorageError::io("resize", path, e))
}

/// A short random token for temporary file names.
fn uuid_like() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

#[cfg(test)]
mod tests;
