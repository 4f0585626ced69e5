//! Built-in AMIs: run a `fixtures/<name>/build` recipe once and cache its output.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sparse::tail;
use super::{Storage, StorageError};

/// Where ec2d looks for the recipes when `$EC2D_FIXTURES` is not set, after the directory relative
/// to the executable.
const SYSTEM_FIXTURES: &str = "/usr/share/ec2d/fixtures";

/// `manifest.json` written by a recipe next to its root image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// EC2's spelling: `x86_64` or `arm64`.
    pub architecture: String,
    pub root_device_name: String,
    /// File name of the raw ext4 root image, relative to the manifest.
    #[serde(default = "default_root_image")]
    pub root_image: String,
    /// Apparent size of the root image in bytes (it is sparse on disk).
    pub size_bytes: u64,
    /// Hex SHA-256 of the root image, checked before the cache is trusted.
    pub sha256: String,
    /// Debian packages the image was built from, as `package=version`.
    #[serde(default)]
    pub built_from: Vec<String>,
    /// Kernel for direct boot by the microVM engine, relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initrd for direct boot by the microVM engine, relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line the image expects (the engine appends its own identity words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cmdline: Option<String>,
}

fn default_root_image() -> String {
    "root.img".to_string()
}

/// A built and verified built-in AMI in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinImage {
    pub name: String,
    /// Raw ext4 root filesystem image; treat it as read-only and copy it into a volume.
    pub root_image: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub manifest: Manifest,
}

/// Finds the recipes directory: `$EC2D_FIXTURES`, else `<dir of the ec2d executable>/../../fixtures`
/// (the cargo `target/<profile>/ec2d` layout), else `/usr/share/ec2d/fixtures`.
pub fn locate_fixtures() -> Result<PathBuf, StorageError> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("EC2D_FIXTURES") {
        // An explicit setting that is wrong is an error, not a reason to silently use another copy.
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Ok(dir);
        }
        return Err(StorageError::FixturesNotFound {
            searched: format!("$EC2D_FIXTURES={}", dir.display()),
        });
    }
    searched.push("$EC2D_FIXTURES (unset)".to_string());
    match std::env::current_exe() {
        Ok(exe) => {
            if let Some(dir) = exe.parent().map(|d| d.join("../../fixtures")) {
                if dir.is_dir() {
                    return Ok(dir.canonicalize().unwrap_or(dir));
                }
                searched.push(dir.display().to_string());
            }
        }
        Err(e) => searched.push(format!("<executable dir>/../../fixtures ({e})")),
    }
    let system = PathBuf::from(SYSTEM_FIXTURES);
    if system.is_dir() {
        return Ok(system);
    }
    searched.push(SYSTEM_FIXTURES.to_string());
    Err(StorageError::FixturesNotFound {
        searched: searched.join(", "),
    })
}

/// Recipe names become directory names and appear in AMI names: keep them plain.
fn valid_recipe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// The version becomes part of a directory name; refuse anything that could escape it.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && !v.starts_with('.')
}

/// A manifest's file reference must be a plain name inside the image directory.
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!(
            "manifest names file {name:?} outside its directory"
        ));
    }
    Ok(dir.join(name))
}

fn sha256_file(path: &Path) -> Result<String, StorageError> {
    let mut f = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| StorageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Storage {
    /// The recipes directory this storage builds from.
    pub fn fixtures_dir(&self) -> Result<PathBuf, StorageError> {
        match &self.fixtures {
            Some(dir) => Ok(dir.clone()),
            None => locate_fixtures(),
        }
    }

    /// Names of the built-in AMI recipes available (subdirectories of the fixtures dir with a
    /// `build` script), sorted.
    pub fn builtin_names(&self) -> Result<Vec<String>, StorageError> {
        let dir = self.fixtures_dir()?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| StorageError::io("list", &dir, e))? {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_recipe_name(&name) && entry.path().join("build").is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The version of the recipe `name`, as its `build --print-version` reports it.
    pub fn builtin_version(&self, name: &str) -> Result<String, StorageError> {
        let build = self.recipe(name)?;
        let out = Command::new("bash")
            .arg(&build)
            .args(self.boot_files.then_some("--with-kernel"))
            .arg("--print-version")
            .output()
            .map_err(|e| StorageError::io("run", &build, e))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !valid_version(&version) {
            return Err(StorageError::Command {
                command: format!("bash {} --print-version", build.display()),
                status: out.status.to_string(),
                output: tail(
                    &format!("{version}\n{}", String::from_utf8_lossy(&out.stderr)),
                    10,
                ),
            });
        }
        Ok(version)
    }

    /// Returns the built-in AMI `name` for the current recipe version, building it first if the
    /// cache has no valid copy. Building downloads Debian packages and takes a few seconds; it
    /// happens once per recipe version and data directory.
    pub fn ensure_builtin(&self, name: &str) -> Result<BuiltinImage, StorageError> {
        let version = self.builtin_version(name)?;
        let images = self.root.join("images");
        let dir = images.join(format!("{name}-{version}"));

        // One builder at a time, in this process (threads) and across processes sharing the data
        // directory (file lock), so nobody reads a half-renamed cache or builds twice.
        let _guard = self
            .build_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock_path = images.join(".build.lock");
        let lock =
            File::create(&lock_path).map_err(|e| StorageError::io("create", &lock_path, e))?;
        lock.lock()
            .map_err(|e| StorageError::io("lock", &lock_path, e))?;

        if dir.join("manifest.json").is_file() {
            match self.load_verified(name, &version, &dir) {
                Ok(image) => return Ok(image),
                Err(e) => {
                    self.verified
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .remove(&dir);
                    tracing::warn!(image = %dir.display(), error = %e, "cached built-in AMI is invalid; rebuilding");
                    fs::remove_dir_all(&dir).map_err(|e| StorageError::io("remove", &dir, e))?;
                }
            }
        } else if dir.exists() {
            // A directory without a manifest is not something we renamed into place; start over.
            fs::remove_dir_all(&dir).map_err(|e| StorageError::io("remove", &dir, e))?;
        }

        let build = self.recipe(name)?;
        let tmp = images.join(format!(".build-{name}-{version}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| StorageError::io("remove", &tmp, e))?;
        }
        let cache = std::env::var_os("EC2D_BUILD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| images.join(".cache"));
        tracing::info!(
            "building built-in AMI {name} (version {version}) from {} …",
            build.display()
        );
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&build)
            .args(self.boot_files.then_some("--with-kernel"))
            .arg("--cache")
            .arg(&cache)
            .arg(&tmp)
            .env("PATH", build_path())
            .output()
            .map_err(|e| StorageError::io("run", &build, e))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(StorageError::Command {
                command: format!(
                    "bash {}{} --cache {} {}",
                    build.display(),
                    if self.boot_files {
                        " --with-kernel"
                    } else {
                        ""
                    },
                    cache.display(),
                    tmp.display()
                ),
                status: out.status.to_string(),
                output: tail(
                    &format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    20,
                ),
            });
        }
        // Check the fresh build before publishing it, so a bad recipe never lands in the cache.
        if let Err(e) = self.load_verified(name, &version, &tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dir).map_err(|e| StorageError::io("rename", &tmp, e))?;
        {
            // The bytes were hashed under the temporary name; don't hash them again.
            let mut verified = self
                .verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            verified.remove(&tmp);
            verified.insert(dir.clone());
        }
        tracing::info!(
            "built-in AMI {name} ready in {:.1}s at {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        // Paths in the result must point at the final directory, not the temporary one.
        self.load_verified(name, &version, &dir)
    }

    /// The built-in AMI `name` if a valid copy for the current recipe version is already cached;
    /// never builds. For listing images without paying for a build.
    pub fn cached_builtin(&self, name: &str) -> Result<Option<BuiltinImage>, StorageError> {
        let version = self.builtin_version(name)?;
        let dir = self.root.join("images").join(format!("{name}-{version}"));
        if !dir.join("manifest.json").is_file() {
            return Ok(None);
        }
        self.load_verified(name, &version, &dir).map(Some)
    }

    fn recipe(&self, name: &str) -> Result<PathBuf, StorageError> {
        if !valid_recipe_name(name) {
            return Err(StorageError::UnknownBuiltin(name.to_string()));
        }
        let build = self.fixtures_dir()?.join(name).join("build");
        if !build.is_file() {
            return Err(StorageError::UnknownBuiltin(format!(
                "{name} (no {})",
                build.display()
            )));
        }
        Ok(build)
    }

    /// Reads `dir/manifest.json` and checks it against the expected name and version and the root
    /// image against its size and SHA-256. The hash is checked once per directory per process:
    /// images are large and the cache is only written by us, under the build lock.
    fn load_verified(
        &self,
        name: &str,
        version: &str,
        dir: &Path,
    ) -> Result<BuiltinImage, StorageError> {
        let bad = |reason: String| StorageError::BadImage {
            name: name.to_string(),
            reason,
        };
        let manifest_path = dir.join("manifest.json");
        let text = fs::read_to_string(&manifest_path)
            .map_err(|e| StorageError::io("read", &manifest_path, e))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: {e}", manifest_path.display())))?;
        if manifest.name != name || manifest.version != version {
            return Err(bad(format!(
                "manifest says {}-{}, expected {name}-{version}",
                manifest.name, manifest.version
            )));
        }
        let root_image = file_in(dir, &manifest.root_image).map_err(bad)?;
        let len = fs::metadata(&root_image)
            .map_err(|e| StorageError::io("stat", &root_image, e))?
            .len();
        if len != manifest.size_bytes {
            return Err(bad(format!(
                "{} is {len} bytes, manifest says {}",
                root_image.display(),
                manifest.size_bytes
            )));
        }
        let already = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(dir);
        if !already {
            let sha = sha256_file(&root_image)?;
            if !sha.eq_ignore_ascii_case(&manifest.sha256) {
                return Err(bad(format!(
                    "{} has sha256 {sha}, manifest says {}",
                    root_image.display(),
                    manifest.sha256
                )));
            }
            self.verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(dir.to_path_buf());
        }
        let optional = |f: &Option<String>| -> Result<Option<PathBuf>, StorageError> {
            match f {
                None => Ok(None),
                Some(f) => {
                    let p = file_in(dir, f).map_err(bad)?;
                    if !p.is_file() {
                        return Err(bad(format!("{} is missing", p.display())));
                    }
                    Ok(Some(p))
                }
            }
        };
        Ok(BuiltinImage {
            name: name.to_string(),
            kernel: optional(&manifest.kernel)?,
            initrd: optional(&manifest.initrd)?,
            root_image,
            manifest,
        })
    }
}

/// PATH for recipes: the caller's, plus the sbin directories where e2fsprogs lives (an
/// unprivileged PATH usually lacks them).
fn build_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let extra = PathBuf::from(extra);
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
}
