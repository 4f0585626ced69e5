//! Sparse file copies and ext4 growth, the two disk operations behind volumes and snapshots.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::StorageError;

/// Granularity at which the std fallback detects zeros: the ext4 block size of our images, so a
/// block the filesystem never wrote stays a hole in the copy.
const ZERO_BLOCK: usize = 4096;

/// Copies `src` to a new file `dst`, leaving holes where `src` has holes or all-zero blocks.
///
/// GNU `cp --sparse=always` walks only the data extents (SEEK_DATA/SEEK_HOLE), so the copy time
/// follows the data actually written, not the volume size; `--reflink=auto` makes it a constant-time
/// clone on btrfs/XFS. If `cp` is missing or refuses (a non-GNU cp), a std-only copy does the same
/// with zero detection; it still reads the holes, but only a misconfigured host gets there.
pub(crate) fn sparse_copy(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg("--reflink=auto")
        .arg("--")
        .arg(src)
        .arg(dst)
        .output();
    match cp {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => tracing::warn!(
            src = %src.display(),
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "cp --sparse=always failed; falling back to a slower in-process sparse copy"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot run cp; falling back to a slower in-process sparse copy"
        ),
    }
    // cp may have left a partial file behind.
    let _ = fs::remove_file(dst);
    sparse_copy_std(src, dst)
}

/// In-process sparse copy: writes only the non-zero 4 KiB blocks and seeks over the rest.
pub(crate) fn sparse_copy_std(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let io_src = |e| StorageError::io("read", src, e);
    let io_dst = |e| StorageError::io("write", dst, e);
    let mut input = File::open(src).map_err(io_src)?;
    let len = input.metadata().map_err(io_src)?.len();
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset: u64 = 0;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(io_src)?;
        if n == 0 {
            break;
        }
        let mut pos = 0;
        while pos < n {
            let end = (pos + ZERO_BLOCK).min(n);
            if buf[pos..end].iter().any(|&b| b != 0) {
                // Coalesce the run of non-zero blocks into one write.
                let mut run_end = end;
                while run_end < n {
                    let next = (run_end + ZERO_BLOCK).min(n);
                    if buf[run_end..next].iter().all(|&b| b == 0) {
                        break;
                    }
                    run_end = next;
                }
                output
                    .seek(SeekFrom::Start(offset + pos as u64))
                    .map_err(io_dst)?;
                output.write_all(&buf[pos..run_end]).map_err(io_dst)?;
                pos = run_end;
            } else {
                pos = end;
            }
        }
        offset += n as u64;
    }
    // Trailing zeros were skipped, so the length must be set explicitly.
    output.set_len(len).map_err(io_dst)?;
    Ok(())
}

/// Reads until `buf` is full or EOF, so zero detection sees whole blocks.
fn read_full(r: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when `path` starts with an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
pub(crate) fn is_ext_filesystem(path: &Path) -> Result<bool, StorageError> {
    let mut f = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let mut magic = [0u8; 2];
    if f.seek(SeekFrom::Start(1080)).is_err() || read_full(&mut f, &mut magic).unwrap_or(0) < 2 {
        return Ok(false);
    }
    Ok(magic == [0x53, 0xEF])
}

/// Grows the ext4 filesystem in the image file `path` to the file's current length.
///
/// resize2fs refuses to work on a filesystem that was not checked since its last mount, so a
/// forced e2fsck runs first; `-y` repairs what a crashed guest may have left behind.
pub(crate) fn grow_ext4(path: &Path) -> Result<(), StorageError> {
    // e2fsck: 0 clean, 1 errors fixed, 2 fixed and "reboot"; 4 and above are real failures.
    run_tool("e2fsck", &[OsStr::new("-fy"), path.as_os_str()], |code| {
        code < 4
    })?;
    run_tool("resize2fs", &[OsStr::new("-f"), path.as_os_str()], |code| {
        code == 0
    })?;
    Ok(())
}

/// Runs an e2fsprogs tool, treating exit codes accepted by `ok` as success.
pub(crate) fn run_tool(
    name: &str,
    args: &[&OsStr],
    ok: impl Fn(i32) -> bool,
) -> Result<String, StorageError> {
    let program = find_tool(name);
    let command = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(&program)
        .args(args)
        .output()
        .map_err(|e| StorageError::Command {
            command: command.clone(),
            status: format!("could not start: {e}"),
            output: String::new(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(code) if ok(code) => Ok(text),
        _ => Err(StorageError::Command {
            command,
            status: out.status.to_string(),
            output: tail(&text, 20),
        }),
    }
}

/// Finds a system tool. e2fsprogs lives in /usr/sbin, which is not on an unprivileged PATH, so
/// the sbin directories are searched after PATH.
pub(crate) fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The last `lines` lines of a command's output, for error messages that stay readable.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
