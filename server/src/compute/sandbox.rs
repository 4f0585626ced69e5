//! The sandbox engine: an instance's root volume, loop-attached and mounted inside new
//! mount, pid, net, uts and ipc namespaces, with the volume's own `/sbin/init` as PID 1.
//!
//! Everything is done with standard tools (util-linux `unshare`, `losetup`, `mount`,
//! coreutils `chroot`, `env`) driven from a small `sh` script, because `unsafe` (and with
//! it `pre_exec`, `unshare(2)` and `mount(2)`) is not allowed outside `vmm/`.
//!
//! Process tree of one running machine (host PIDs):
//!
//! ```text
//! ec2d
//!  └─ unshare --fork --kill-child …   argv carries `ec2d-sandbox:<scope>:<instance id>`
//!      └─ /sbin/init (PID 1 of the new pid namespace; it was the setup script until exec)
//! ```
//!
//! The outer `sh` puts itself into the instance's cgroups and then `exec`s `unshare`, so
//! nothing of the machine ever runs outside them. `unshare` mirrors its child's exit
//! status (a signal death is re-raised on itself), which is how init's exit reaches us.
//!
//! Host objects are named after the instance id so that [`SandboxEngine::cleanup_orphans`]
//! finds them after an ec2d crash:
//! - processes: `ec2d-sandbox:<scope>:<id>` in the argv of `unshare` (and the setup
//!   script), where the scope is a hash of the data directory;
//! - cgroups: `/sys/fs/cgroup/{cpu,memory,pids}/ec2d/<id>` (every process of the machine),
//!   removed only when recorded in our data directory or holding one of our processes;
//! - loop devices and mount points: recorded in `<data_dir>/sandbox/<id>.json` while the
//!   machine exists; as a fallback, any loop device backed by a file under the data
//!   directory that no live machine's record claims is detached.
//!
//! Mounts are made only inside the machine's private mount namespace, so they vanish with
//! its last process and never appear in the host's mount table.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, PipeReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill as send_signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use vmm::net::NetBackend;

use super::engine::{Engine, EngineError, EventSink, Machine, MachineEvent, MachineSpec};

/// What `console()` returns at most (GetConsoleOutput's limit).
const CONSOLE_RING: usize = 64 * 1024;
/// `console.log` is trimmed to its last `CONSOLE_LOG_KEEP` bytes when it passes this.
const CONSOLE_LOG_MAX: u64 = 1024 * 1024;
const CONSOLE_LOG_KEEP: usize = 256 * 1024;
/// Printed by the setup script right before it execs init. Only looked for before init
/// runs (the guest cannot forge it then), and stripped from the console.
const EXEC_MARKER: &[u8] = b"\x1eec2d-sandbox-exec\n";
/// Printed by the setup script (instead of starting init) when the volume's init is not the
/// flavour the engine guessed; followed by the flavour's name and a newline.
const FLAVOUR_MARKER: &[u8] = b"\x1eec2d-sandbox-flavour ";
/// Remembers a machine's init flavour in its state directory, so later boots skip the probe.
const FLAVOUR_FILE: &str = "init-flavour";
/// systemd's SIGRTMIN+4 (glibc's SIGRTMIN is 34): power off.
const SIGRTMIN_4: &str = "38";
/// Prefix of argv[0] of the setup script (so also in `unshare`'s argv); followed by
/// `<scope>:<instance id>`.
const ARGV_TAG: &str = "ec2d-sandbox:";
/// How long a guest has to act on a reboot request before it is reset, as EC2 does after
/// "a few minutes".
const REBOOT_GRACE: Duration = Duration::from_secs(120);
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// The cgroup v1 `name=systemd` hierarchy: a systemd guest's cgroup namespace is rooted at
/// `systemd/ec2d/<id>`, and systemd makes its own cgroups below it.
const CGROUP_SYSTEMD: &str = "systemd";
/// Every hierarchy that may hold a machine's cgroup.
const CGROUP_HIERARCHIES: [&str; 4] = ["cpu", "memory", "pids", CGROUP_SYSTEMD];
const CGROUP_PARENT: &str = "ec2d";
const CFS_PERIOD_US: u64 = 100_000;
/// A fixed PATH for every tool we run, so the host's environment cannot change them.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CAP_SYS_ADMIN: u32 = 21;

/// Runs on the host, in ec2d's namespaces. Joins the cgroups first (before anything
/// forks) and becomes `unshare`, whose child is PID 1 of the new pid namespace.
const OUTER_SCRIPT: &str = r#"
for f in $EC2D_CGROUP_PROCS; do echo $$ > "$f" || :; done
if [ "$EC2D_FLAVOUR" = systemd ]; then
    # systemd wants a pty as its console: script(1) allocates one, copies its master to our
    # stdout and exits 128+N when its child (unshare) dies by signal N. Neither script nor
    # unshare may die of the SIGHUP that agetty's vhangup() of the console sends.
    trap '' HUP
    exec "$EC2D_SCRIPT" -qefc "$EC2D_PTY_CMD" /dev/null
fi
exec "$EC2D_UNSHARE" --fork --kill-child --pid --mount --uts --ipc --net --propagation private \
    -- "$EC2D_SH" -c "$EC2D_SETUP" "$0" "$@"
"#;

/// Runs as PID 1 of the new namespaces (propagation already private, so none of these
/// mounts reach the host). `$@` is the guest's environment as K=V words.
const SETUP_SCRIPT: &str = r#"
set -eu
R=$EC2D_ROOT
mount -o rw "$EC2D_ROOT_DEV" "$R"
# Which init the volume has: systemd needs a different setup (cgroups, pty console) and
# different signals. A mismatch with what the engine guessed ends this boot with a note.
case "$(readlink "$R/sbin/init" 2>/dev/null)" in */systemd) F=systemd ;; *) F=tiny ;; esac
if [ "$F" != "$EC2D_FLAVOUR" ]; then printf '\036ec2d-sandbox-flavour %s\n' "$F"; exit 0; fi
for d in proc sys dev; do [ -d "$R/$d" ] || mkdir -p "$R/$d"; done
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"

# A minimal /dev: a devtmpfs would hand the guest every host disk. The nodes and links
# come from a template made once per engine (one cp instead of a dozen mknod/ln forks).
D=$R/dev
mount -t tmpfs -o nosuid,noexec,mode=755,size=64k ec2d-dev "$D"

# /sys, read-only: the guest is real root, and sysfs writes would reach host devices. It
# carries the identity EC2 presents: class/dmi/id as a microVM's SMBIOS fills it, and
# hypervisor/uuid as EC2's Xen instances have it (cloud-init reads no DMI in a container,
# but takes an `ec2…` /sys/hypervisor/uuid as AWS). sysfs takes no new files, and the host
# may have no /sys/hypervisor to mount on, so /sys is an overlay of $EC2D_IDENTITY (written
# by ec2d) on the sysfs staged in /dev/.sysfs, with the real sysfs directories bound back
# over it: sd-device (udevadm, networkd) refuses devices outside a sysfs filesystem.
mkdir "$D/.sysfs"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$D/.sysfs"
mount -t overlay -o "lowerdir=$EC2D_IDENTITY:$D/.sysfs" ec2d-identity "$R/sys"
for p in "$D/.sysfs"/*; do
    n=${p##*/}
    case "$n" in class | hypervisor) continue ;; esac
    [ -d "$p" ] && [ ! -L "$p" ] || continue
    mount -o bind,ro,nosuid,nodev,noexec "$p" "$R/sys/$n"
done
umount -l "$D/.sysfs"
rmdir "$D/.sysfs"

cp -a "$EC2D_DEV_TEMPLATE/." "$D/"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$D/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$D/shm"
eval "$EC2D_DISK_NODES"

printf '%s' "$EC2D_HOSTNAME" > /proc/sys/kernel/hostname

# The ENI: ec2d made a tap device in its own network namespace and reads and writes it for
# the fabric; here it moves into ours (`netns 1` is resolved in our pid namespace: this
# script) and becomes eth0 with the ENI's MAC. The guest brings it up and asks DHCP.
ip link set lo up 2>/dev/null || :
if [ -n "${EC2D_TAP:-}" ]; then
    nsenter --net="$EC2D_HOST_NETNS" -- ip link set dev "$EC2D_TAP" netns 1
    ip link set dev "$EC2D_TAP" name eth0 address "$EC2D_MAC" mtu 9001
fi

if [ "$EC2D_FLAVOUR" = systemd ]; then
    # Legacy cgroup layout: the name=systemd hierarchy, whose root in our cgroup namespace is
    # the machine's own cgroup; a tmpfs /run; the pty (our stdio) as /dev/console.
    mount -t tmpfs -o nosuid,nodev,noexec,mode=755,size=4m ec2d-cgroup "$R/sys/fs/cgroup"
    mkdir "$R/sys/fs/cgroup/systemd"
    mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup "$R/sys/fs/cgroup/systemd"
    mount -t tmpfs -o nosuid,nodev,mode=755,size=64m ec2d-run "$R/run"
    T=$(tty)
    : > "$D/console"
    chmod 600 "$D/console"
    mount --bind "$T" "$D/console"
    printf '\036ec2d-sandbox-exec\n'
    exec env -i -- "$@" container=ec2d "$EC2D_CHROOT" "$R" /sbin/init <"$D/console" >"$D/console" 2>&1
fi


printf '\036ec2d-sandbox-exec\n'
exec env -i -- "$@" "$EC2D_CHROOT" "$R" /sbin/init
"#;

/// Absolute paths of the host tools, resolved once so a missing one is reported up front.
#[derive(Debug, Clone)]
struct Tools {
    sh: PathBuf,
    unshare: PathBuf,
    losetup: PathBuf,
    chroot: PathBuf,
    umount: PathBuf,
    /// util-linux `script` (a pty for systemd's console) and `kill` (real-time signals);
    /// only systemd guests need them.
    script: Option<PathBuf>,
    kill: Option<PathBuf>,
    /// iproute2 `ip` and util-linux `nsenter`, to move a tap device into the machine's network
    /// namespace; without them machines run with no network.
    ip: Option<PathBuf>,
    nsenter: Option<PathBuf>,
}

/// What the root volume's `/sbin/init` is, which decides setup, console and signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Flavour {
    /// Anything but systemd, e.g. the tiny AMI's: console on a pipe, SIGUSR2 powers off
    /// (exit 0), SIGTERM reboots (exit 129).
    #[default]
    Tiny,
    /// systemd: cgroup namespace, console on a pty, SIGRTMIN+4 powers off (dies by SIGINT),
    /// SIGINT reboots (dies by SIGHUP).
    Systemd,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Tiny => "tiny",
            Flavour::Systemd => "systemd",
        }
    }

    fn parse(s: &str) -> Option<Flavour> {
        match s.trim() {
            "tiny" => Some(Flavour::Tiny),
            "systemd" => Some(Flavour::Systemd),
            _ => None,
        }
    }
}

/// Host objects of one machine, kept on disk so a later ec2d can remove them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    instance_id: String,
    /// Every file this machine attaches, written before any is attached, so that a
    /// concurrent cleanup never mistakes a half-launched machine's loop devices for strays.
    backings: Vec<PathBuf>,
    rootfs: PathBuf,
    identity: PathBuf,
    loops: Vec<LoopDev>,
    cgroups: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopDev {
    device: String,
    backing: PathBuf,
}

pub struct SandboxEngine {
    data_dir: PathBuf,
    records_dir: PathBuf,
    /// A directory of device nodes and links copied into each guest's /dev.
    dev_template: PathBuf,
    /// Names this engine's processes (a hash of the data directory), so that several
    /// ec2d on one host, each with its own data directory, leave each other's alone.
    scope: String,
    tools: Tools,
    /// Whether cgroup v1 cpu/memory/pids hierarchies are mounted where we expect them.
    cgroups_usable: bool,
    /// Ids of the machines this engine supervises (launched and not yet gone).
    running: Arc<Mutex<BTreeSet<String>>>,
    /// The "cgroups unavailable" warning is logged once per engine, not per launch.
    cgroup_warned: Arc<AtomicBool>,
}

impl SandboxEngine {
    /// Checks privileges, tools and namespace support; `Unavailable` says what is missing.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let data_dir = data_dir.into();
        if !has_cap_sys_admin() {
            return Err(EngineError::Unavailable(
                "the sandbox engine needs root (or CAP_SYS_ADMIN) to create namespaces, \
                 mounts and loop devices; run ec2d as root or use --engine microvm"
                    .into(),
            ));
        }
        let find = |name: &str| {
            find_tool(name).ok_or_else(|| {
                EngineError::Unavailable(format!(
                    "the sandbox engine needs `{name}` (util-linux/coreutils) in {SAFE_PATH}"
                ))
            })
        };
        let tools = Tools {
            sh: find("sh")?,
            unshare: find("unshare")?,
            losetup: find("losetup")?,
            chroot: find("chroot")?,
            umount: find("umount")?,
            script: find_tool("script"),
            kill: find_tool("kill"),
            ip: find_tool("ip"),
            nsenter: find_tool("nsenter"),
        };
        if tools.ip.is_none() || tools.nsenter.is_none() {
            tracing::warn!(
                "sandbox machines will have no network: `ip` (iproute2) or `nsenter` \
                 (util-linux) is missing from {SAFE_PATH}"
            );
        }
        for name in ["mount", "env", "mknod", "cp"] {
            find(name)?;
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err(EngineError::Unavailable(
                "the sandbox engine needs loop devices (/dev/loop-control is missing; \
                 modprobe loop)"
                    .into(),
            ));
        }
        // Root is not always enough (a container may forbid unshare), so try it once.
        let probe = Command::new(&tools.unshare)
            .args([
                "--fork",
                "--kill-child",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--propagation",
                "private",
                "true",
            ])
            .env_clear()
            .env("PATH", SAFE_PATH)
            .stdin(Stdio::null())
            .output()?;
        if !probe.status.success() {
            return Err(EngineError::Unavailable(format!(
                "the sandbox engine cannot create namespaces here: unshare failed: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            )));
        }
        let records_dir = data_dir.join("sandbox");
        fs::create_dir_all(&records_dir)?;
        let dev_template = make_dev_template(&records_dir)?;
        let scope = scope_of(&data_dir);
        let cgroups_usable = Path::new(CGROUP_ROOT).join("cpu/cpu.cfs_quota_us").exists()
            && Path::new(CGROUP_ROOT)
                .join("memory/memory.limit_in_bytes")
                .exists()
            && Path::new(CGROUP_ROOT).join("pids/cgroup.procs").exists();
        let engine = SandboxEngine {
            data_dir,
            records_dir,
            dev_template,
            scope,
            tools,
            cgroups_usable,
            running: Arc::new(Mutex::new(BTreeSet::new())),
            cgroup_warned: Arc::new(AtomicBool::new(false)),
        };
        if !cgroups_usable {
            engine.warn_cgroups("cgroup v1 cpu, memory and pids hierarchies are not mounted");
        }
        Ok(engine)
    }

    fn warn_cgroups(&self, why: &str) {
        if !self.cgroup_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "sandbox machines run without CPU and memory limits: {why} \
                 (expected under {CGROUP_ROOT}/{{cpu,memory,pids}})"
            );
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.records_dir.join(format!("{id}.json"))
    }

    /// Creates `ec2d/<id>` in each controller and applies the limits. On failure the
    /// machine runs unlimited (warned once) rather than not at all.
    fn create_cgroups(&self, spec: &MachineSpec) -> Vec<PathBuf> {
        if !self.cgroups_usable {
            return Vec::new();
        }
        let mut dirs = Vec::new();
        let result = (|| -> io::Result<()> {
            for ctrl in CGROUP_CONTROLLERS {
                let dir = cgroup_dir(ctrl, &spec.instance_id);
                fs::create_dir_all(&dir)?;
                dirs.push(dir.clone());
                match ctrl {
                    "cpu" => {
                        fs::write(dir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                        let quota = u64::from(spec.vcpus.max(1)) * CFS_PERIOD_US;
                        fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                    }
                    "memory" => {
                        let bytes = spec.memory_mib.saturating_mul(1024 * 1024);
                        fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                    }
                    _ => {}
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                // systemd guests need a cgroup of their own in the name=systemd hierarchy.
                let systemd = Path::new(CGROUP_ROOT).join(CGROUP_SYSTEMD);
                if systemd.join("cgroup.procs").exists() {
                    let dir = cgroup_dir(CGROUP_SYSTEMD, &spec.instance_id);
                    match fs::create_dir_all(&dir) {
                        Ok(()) => dirs.push(dir),
                        Err(e) => tracing::warn!(cgroup = %dir.display(), "cannot create: {e}"),
                    }
                }
                dirs
            }
            Err(e) => {
                self.warn_cgroups(&format!("cannot create cgroups: {e}"));
                for dir in dirs.iter().rev() {
                    let _ = fs::remove_dir(dir);
                }
                Vec::new()
            }
        }
    }

    fn losetup_attach(&self, file: &Path, read_only: bool) -> Result<LoopDev, EngineError> {
        let mut cmd = Command::new(&self.tools.losetup);
        cmd.arg("-f").arg("--show");
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd
            .arg(file)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(EngineError::Launch(format!(
                "losetup {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !device.starts_with("/dev/loop") {
            return Err(EngineError::Launch(format!(
                "losetup {} printed no device: {device:?}",
                file.display()
            )));
        }
        Ok(LoopDev {
            device,
            backing: file.to_path_buf(),
        })
    }
}

impl Engine for SandboxEngine {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn launch(
        &self,
        spec: MachineSpec,
        events: EventSink,
    ) -> Result<Box<dyn Machine>, EngineError> {
        let id = spec.instance_id.clone();
        if !valid_id(&id) {
            return Err(EngineError::Launch(format!("invalid instance id {id:?}")));
        }
        let mut claim = Claim::new(&self.running, &id)?;
        // Objects under this id that no machine of ours owns are left from an earlier
        // ec2d; they would share the cgroups (and the volume) with the new machine.
        let stale = self.record_path(&id).exists()
            || CGROUP_HIERARCHIES
                .iter()
                .any(|c| cgroup_dir(c, &id).exists());
        if stale {
            tracing::info!(instance = %id, "removing leftovers of an earlier run before launch");
            self.remove_leftovers(&|x| x == id, false);
        }
        fs::create_dir_all(&spec.state_dir)?;
        let state_dir = fs::canonicalize(&spec.state_dir)?;
        // Both paths end up in an overlayfs option string, where these are separators.
        if state_dir
            .to_string_lossy()
            .contains([',', ':', '\\', '\n', '='])
        {
            return Err(EngineError::Launch(format!(
                "state directory {} contains a character overlayfs options cannot carry",
                state_dir.display()
            )));
        }
        let rootfs = state_dir.join("rootfs");
        let identity = state_dir.join("identity");
        fs::create_dir_all(&rootfs)?;
        // Afresh: an older ec2d may have left another layout there.
        let _ = fs::remove_dir_all(&identity);
        fs::create_dir_all(&identity)?;
        write_identity(&identity, &spec)?;
        let root_disk = fs::canonicalize(&spec.root_disk).map_err(|e| {
            EngineError::Launch(format!("root volume {}: {e}", spec.root_disk.display()))
        })?;

        let mut disks = Vec::new();
        for disk in &spec.disks {
            let name = disk
                .device_name
                .strip_prefix("/dev/")
                .unwrap_or(&disk.device_name)
                .to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return Err(EngineError::Launch(format!(
                    "invalid device name {:?}",
                    disk.device_name
                )));
            }
            let path = fs::canonicalize(&disk.path)
                .map_err(|e| EngineError::Launch(format!("volume {}: {e}", disk.path.display())))?;
            disks.push((name, path, disk.read_only));
        }

        let mut record = Record {
            instance_id: id.clone(),
            backings: std::iter::once(root_disk.clone())
                .chain(disks.iter().map(|(_, p, _)| p.clone()))
                .collect(),
            rootfs: rootfs.clone(),
            identity: identity.clone(),
            loops: Vec::new(),
            cgroups: Vec::new(),
        };
        // From here on, a failure must undo what was made: the teardown below does.
        let setup = (|| -> Result<String, EngineError> {
            write_record(&self.record_path(&id), &record)?;
            record.loops.push(self.losetup_attach(&root_disk, false)?);
            let mut disk_nodes = String::new();
            for (name, path, read_only) in &disks {
                let dev = self.losetup_attach(path, *read_only)?;
                let numbers = loop_numbers(&dev.device);
                record.loops.push(dev);
                let (major, minor) = numbers?;
                let mode = if *read_only { "440" } else { "660" };
                disk_nodes.push_str(&format!(
                    "mknod -m {mode} \"$D/{name}\" b {major} {minor}\n"
                ));
            }
            record.cgroups = self.create_cgroups(&spec);
            write_record(&self.record_path(&id), &record)?;
            Ok(disk_nodes)
        })();
        let disk_nodes = match setup {
            Ok(nodes) => nodes,
            Err(e) => {
                teardown(&self.tools, &self.record_path(&id), &record);
                return Err(e);
            }
        };

        let console = Console::open(state_dir.join("console.log"));
        let inner = Arc::new(Inner {
            spec: spec.clone(),
            tools: self.tools.clone(),
            record_path: self.record_path(&id),
            record,
            disk_nodes,
            dev_template: self.dev_template.clone(),
            scope: self.scope.clone(),
            running: Arc::clone(&self.running),
            events,
            ctl: Mutex::new(Ctl {
                flavour: fs::read_to_string(state_dir.join(FLAVOUR_FILE))
                    .ok()
                    .and_then(|s| Flavour::parse(&s))
                    .unwrap_or_default(),
                ..Ctl::default()
            }),
            changed: Condvar::new(),
            console: Mutex::new(console),
        });
        let first = {
            let mut ctl = inner.lock_ctl();
            inner.boot(&mut ctl)
        };
        let (child, reader) = match first {
            Ok(boot) => boot,
            Err(e) => {
                teardown(&inner.tools, &inner.record_path, &inner.record);
                return Err(EngineError::Launch(format!("cannot start sandbox: {e}")));
            }
        };
        let supervisor = Arc::clone(&inner);
        std::thread::Builder::new()
            .name(format!("sandbox-{id}"))
            .spawn(move || supervisor.supervise(child, reader))
            .map_err(|e| {
                // Without a supervisor nobody would reap or clean up: stop it now. The
                // loop devices may still be busy for a moment; `losetup -d` then marks
                // them to detach on release.
                kill_now(&inner.lock_ctl());
                teardown(&inner.tools, &inner.record_path, &inner.record);
                EngineError::Launch(format!("cannot start supervisor thread: {e}"))
            })?;
        claim.keep();
        tracing::info!(instance = %id, "sandbox machine launching");
        Ok(Box::new(SandboxMachine { inner }))
    }

    fn cleanup_orphans(&self, live: &[String]) -> Result<(), EngineError> {
        let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
        self.remove_leftovers(&|id| !live.contains(id), true);
        Ok(())
    }
}

impl SandboxEngine {
    /// Removes the host objects of every machine for which `doomed(id)` holds. With
    /// `strays`, also detaches loop devices backed by files under the data directory that
    /// no surviving machine's record claims.
    fn remove_leftovers(&self, doomed: &dyn Fn(&str) -> bool, strays: bool) {
        let mut records = Vec::new();
        let mut live_backings = BTreeSet::new();
        if let Ok(dir) = fs::read_dir(&self.records_dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Some(record) = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                else {
                    tracing::warn!(path = %path.display(), "unreadable sandbox record, removing");
                    let _ = fs::remove_file(&path);
                    continue;
                };
                if !doomed(&record.instance_id) {
                    live_backings.extend(record.backings.iter().cloned());
                } else {
                    records.push((path, record));
                }
            }
        }

        // Processes: kill the unshare/setup processes (the kernel then kills each
        // namespace through --kill-child) and everything left in the cgroups. Only
        // machines of this data directory (its scope in the argv tag) are ours: another
        // ec2d on the same host keeps its machines.
        let mut victims = BTreeSet::new();
        let mut tagged_ids = BTreeSet::new();
        let our_prefix = format!("{ARGV_TAG}{}:", self.scope);
        for (pid, argv) in processes() {
            if let Some(id) = argv.iter().find_map(|a| a.strip_prefix(&our_prefix))
                && doomed(id)
            {
                tracing::info!(pid, instance = id, "killing orphaned sandbox process");
                victims.insert(pid);
                tagged_ids.insert(id.to_string());
            }
        }
        let recorded_ids: BTreeSet<String> =
            records.iter().map(|(_, r)| r.instance_id.clone()).collect();
        let mut dead_cgroups = Vec::new();
        for ctrl in CGROUP_HIERARCHIES {
            let parent = Path::new(CGROUP_ROOT).join(ctrl).join(CGROUP_PARENT);
            let Ok(dir) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                // A cgroup is ours if we recorded it or one of our processes is in it.
                let ours = recorded_ids.contains(&name) || tagged_ids.contains(&name);
                if entry.path().is_dir() && doomed(&name) && ours {
                    victims.extend(cgroup_tree_pids(&entry.path()));
                    dead_cgroups.push(entry.path());
                }
            }
        }
        for &pid in &victims {
            let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while victims.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Anything that joined a cgroup while we were killing (a setup script mid-fork).
        for cg in &dead_cgroups {
            for pid in cgroup_tree_pids(cg) {
                let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }

        // Mounts never reach the host table, but a crash mid-way through a future change
        // should not leave one behind either.
        let dead_dirs: Vec<PathBuf> = records
            .iter()
            .flat_map(|(_, r)| [r.rootfs.clone(), r.identity.clone()])
            .collect();
        for mount_point in host_mount_points() {
            if dead_dirs.iter().any(|d| mount_point.starts_with(d)) {
                let _ = Command::new(&self.tools.umount)
                    .arg("-l")
                    .arg(&mount_point)
                    .env_clear()
                    .env("PATH", SAFE_PATH)
                    .stdin(Stdio::null())
                    .output();
            }
        }

        // Loop devices: those recorded for dead machines, and any backed by a file under
        // the data directory that no live machine claims (a record lost in a crash).
        let dead_backings: BTreeSet<PathBuf> = records
            .iter()
            .flat_map(|(_, r)| r.backings.iter().cloned())
            .collect();
        let data_dir = fs::canonicalize(&self.data_dir).unwrap_or(self.data_dir.clone());
        for (device, backing) in loop_devices() {
            let claimed_dead = dead_backings.contains(&backing);
            let stray =
                strays && backing.starts_with(&data_dir) && !live_backings.contains(&backing);
            if claimed_dead || stray {
                tracing::info!(%device, backing = %backing.display(), "detaching orphaned loop device");
                losetup_detach(&self.tools, &device);
            }
        }

        for cg in &dead_cgroups {
            remove_cgroup(cg, true);
        }
        for (path, record) in &records {
            let _ = fs::remove_dir(&record.rootfs);
            let _ = fs::remove_dir_all(&record.identity);
            let _ = fs::remove_file(path);
        }
    }
}

/// What ec2d last asked of the running machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Intent {
    #[default]
    None,
    /// SIGTERM sent; a reset follows after `REBOOT_GRACE`.
    Reboot,
    /// We killed init to reboot it.
    ForcedReboot,
    /// Shutdown or kill: whatever init does now, the machine is not started again.
    PowerOff,
}

#[derive(Debug, Default)]
struct Ctl {
    /// The `unshare` process of the current boot, until it has exited.
    unshare_pid: Option<i32>,
    /// The current boot has exec'd init.
    started: bool,
    intent: Intent,
    /// Counts boots, so a reboot timer knows whether its reboot already happened.
    boot: u64,
    /// Torn down; the terminal event has been (or is being) sent.
    gone: bool,
    /// The flavour the next boot is set up for (what the volume's init was last seen to be).
    flavour: Flavour,
    /// The flavour the current boot was set up for.
    boot_flavour: Flavour,
    /// The current boot found the volume's init to be of another flavour and ended itself.
    flavour_switch: bool,
    /// The current boot's network pumps.
    net: Option<NetBoot>,
}

/// One boot's tap device and the threads copying frames between it and the fabric port. The
/// tap dies with the boot's network namespace, so every boot makes its own.
#[derive(Debug)]
struct NetBoot {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl NetBoot {
    /// How long a pump waits for a frame before it looks at `stop` again.
    const TICK: Duration = Duration::from_millis(200);

    fn start(id: &str, tap: vmm::net::TapBackend, nic: &crate::dataplane::Nic) -> io::Result<Self> {
        let tap = Arc::new(tap);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (tap, link, stop) = (Arc::clone(&tap), Arc::clone(&nic.link), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tap-rx-{id}"))
                    .spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !stop.load(Ordering::Relaxed) {
                            match tap.recv(&mut buf, Self::TICK) {
                                Ok(Some(n)) => {
                                    if link.send(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => {}
                                // The device went with its namespace: the boot is over.
                                Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        {
            let (link, stop) = (Arc::clone(&nic.link), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tap-tx-{id}"))
                    .spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !stop.load(Ordering::Relaxed) {
                            match link.recv(&mut buf, Self::TICK) {
                                // A link that is down drops the frame, as a cable would.
                                Ok(Some(n)) => {
                                    let _ = tap.send(&buf[..n]);
                                }
                                Ok(None) => {}
                                Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        Ok(NetBoot { stop, threads })
    }

    /// Stops the pumps and waits for them, so the next boot's pumps are the only readers.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The tap's name in ec2d's namespace, until the setup script renames it to eth0: unique per
/// instance (the id's last hex digits) and within IFNAMSIZ.
fn tap_name(instance_id: &str) -> String {
    let hex = instance_id.trim_start_matches("i-");
    let tail = &hex[hex.len().saturating_sub(12)..];
    format!("e2d{tail}")
}

struct Inner {
    spec: MachineSpec,
    tools: Tools,
    record_path: PathBuf,
    record: Record,
    disk_nodes: String,
    dev_template: PathBuf,
    scope: String,
    /// The engine's set of machine ids it supervises; this one leaves it when gone.
    running: Arc<Mutex<BTreeSet<String>>>,
    events: EventSink,
    ctl: Mutex<Ctl>,
    changed: Condvar,
    console: Mutex<Console>,
}

/// Opens the boot's tap. The previous boot's device can outlive its last descriptor for a
/// moment (the kernel tears down the guest's network namespace, where it lived as `eth0`,
/// asynchronously), and until it is gone the name is busy: retry briefly.
fn open_tap(name: &str) -> io::Result<vmm::net::TapBackend> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match vmm::net::TapBackend::open(name) {
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

enum Outcome {
    Reboot,
    PoweredOff,
    Crashed(String),
}

impl Inner {
    fn flavour_path(&self) -> PathBuf {
        self.spec.state_dir.join(FLAVOUR_FILE)
    }

    fn lock_ctl(&self) -> MutexGuard<'_, Ctl> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_console(&self) -> MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one boot. Called with the control lock held, so a concurrent kill either
    /// sees the new PID or has already set `PowerOff` (which the caller checks first).
    fn boot(&self, ctl: &mut Ctl) -> io::Result<(Child, PipeReader)> {
        let spec = &self.spec;
        let flavour = ctl.flavour;
        // stdout and stderr share one pipe so the console keeps their interleaving.
        let (reader, writer) = io::pipe()?;
        let writer2 = writer.try_clone()?;
        // What the kernel gives a real init (HOME, TERM), and which engine this is, so
        // an init that runs under both (the tiny AMI's) need not guess.
        let mut env_words = vec![
            "HOME=/".to_string(),
            "TERM=linux".to_string(),
            "ec2d_engine=sandbox".to_string(),
        ];
        for (k, v) in &spec.init_env {
            if valid_env_name(k) {
                env_words.push(format!("{k}={v}"));
            } else {
                tracing::warn!(instance = %spec.instance_id, key = %k, "skipping invalid init variable");
            }
        }
        env_words.push(format!("ec2d_hostname={}", spec.hostname));
        let cgroup_procs = self
            .record
            .cgroups
            .iter()
            .map(|d| d.join("cgroup.procs").to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        // The kernel keeps at most 64 bytes of a hostname.
        let hostname: String = spec.hostname.chars().take(64).collect();
        let tag = format!("{ARGV_TAG}{}:{}", self.scope, spec.instance_id);
        let mut cmd = Command::new(&self.tools.sh);
        cmd.env_clear();
        if flavour == Flavour::Systemd {
            let script = self.tools.script.as_ref().ok_or_else(|| {
                io::Error::other("a systemd guest needs util-linux `script` for its console")
            })?;
            // The command script(1) runs (with $SHELL -c) on the pty: unshare as for any
            // guest, plus a cgroup namespace rooted at the machine's own cgroups.
            let mut pty_cmd = format!(
                "trap '' HUP; exec {} --fork --kill-child --pid --mount --uts --ipc --net \
                 --cgroup --propagation private -- {} -c \"$EC2D_SETUP\"",
                sh_quote(&self.tools.unshare.to_string_lossy()),
                sh_quote(&self.tools.sh.to_string_lossy()),
            );
            for word in std::iter::once(&tag).chain(&env_words) {
                pty_cmd.push(' ');
                pty_cmd.push_str(&sh_quote(word));
            }
            cmd.env("EC2D_SCRIPT", script)
                .env("SHELL", &self.tools.sh)
                .env("EC2D_PTY_CMD", pty_cmd);
        }
        cmd.arg("-c")
            .arg(OUTER_SCRIPT)
            .arg(&tag)
            .args(&env_words)
            .env("EC2D_FLAVOUR", flavour.name())
            .env("PATH", SAFE_PATH)
            .env("EC2D_CGROUP_PROCS", cgroup_procs)
            .env("EC2D_UNSHARE", &self.tools.unshare)
            .env("EC2D_SH", &self.tools.sh)
            .env("EC2D_CHROOT", &self.tools.chroot)
            .env("EC2D_SETUP", SETUP_SCRIPT)
            .env("EC2D_ROOT", &self.record.rootfs)
            .env("EC2D_ROOT_DEV", &self.record.loops[0].device)
            .env("EC2D_IDENTITY", &self.record.identity)
            .env("EC2D_DEV_TEMPLATE", &self.dev_template)
            .env("EC2D_HOSTNAME", hostname)
            .env("EC2D_DISK_NODES", &self.disk_nodes)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        // The previous boot's pumps hold its tap open. A boot that ended before its setup
        // moved the tap into the guest's namespace (a flavour switch) leaves the device here
        // under the same name, and opening that name again while it is attached fails with
        // EBUSY: stop the pumps (closing the old tap, which deletes it) first.
        if let Some(old) = ctl.net.take() {
            old.stop();
        }
        // The primary ENI; further interfaces are not carried by this engine yet.
        let mut tap = None;
        if let (Some(nic), Some(_), Some(_)) =
            (spec.nics.first(), &self.tools.ip, &self.tools.nsenter)
        {
            let t = open_tap(&tap_name(&spec.instance_id))?;
            cmd.env("EC2D_TAP", t.name())
                .env("EC2D_MAC", crate::dataplane::format_mac(&nic.mac))
                .env(
                    "EC2D_HOST_NETNS",
                    format!("/proc/{}/ns/net", std::process::id()),
                );
            tap = Some((t, nic));
        }
        let child = cmd.spawn()?;
        // The Command holds our copies of the pipe's write end; EOF needs them closed.
        drop(cmd);
        if let Some((t, nic)) = tap {
            ctl.net = Some(NetBoot::start(&spec.instance_id, t, nic)?);
        }
        ctl.unshare_pid = i32::try_from(child.id()).ok();
        ctl.started = false;
        ctl.boot_flavour = flavour;
        ctl.flavour_switch = false;
        ctl.boot += 1;
        self.changed.notify_all();
        Ok((child, reader))
    }

    /// Owns the machine from launch to its terminal event: pumps the console, reaps each
    /// boot, decides reboot or power-off, and tears down.
    fn supervise(self: Arc<Self>, mut child: Child, mut reader: PipeReader) {
        let id = self.spec.instance_id.clone();
        // `Started` goes out once, for the first boot that reaches init (a boot killed
        // by a forced reboot before that does not count); later boots are `Rebooted`.
        let mut ever_started = false;
        let terminal = loop {
            let started = self.pump_console(&mut reader, !ever_started);
            ever_started |= started;
            // EOF: unshare has exited (it held the pipe) but is not reaped, so its PID
            // cannot have been reused; forget it before reaping.
            self.lock_ctl().unshare_pid = None;
            let status = child.wait();
            let mut ctl = self.lock_ctl();
            let intent = std::mem::take(&mut ctl.intent);
            let outcome = match status {
                Ok(status) if ctl.flavour_switch && intent != Intent::PowerOff => {
                    tracing::info!(instance = %id, status = %status, flavour = ctl.flavour.name(),
                        "restarting the boot for the volume's init flavour");
                    Outcome::Reboot
                }
                Ok(status) => self.classify(status, started, intent, ctl.boot_flavour),
                Err(e) => Outcome::Crashed(format!("cannot reap sandbox: {e}")),
            };
            match outcome {
                Outcome::Reboot => {
                    tracing::info!(instance = %id, "sandbox machine rebooting");
                    match self.boot(&mut ctl) {
                        Ok((c, r)) => {
                            child = c;
                            reader = r;
                        }
                        Err(e) => break MachineEvent::Crashed(format!("cannot reboot: {e}")),
                    }
                }
                Outcome::PoweredOff => break MachineEvent::PoweredOff,
                Outcome::Crashed(why) => break MachineEvent::Crashed(why),
            }
        };
        let net = self.lock_ctl().net.take();
        if let Some(net) = net {
            net.stop();
        }
        teardown(&self.tools, &self.record_path, &self.record);
        {
            let mut ctl = self.lock_ctl();
            ctl.gone = true;
            self.changed.notify_all();
        }
        lock_set(&self.running).remove(&id);
        tracing::info!(instance = %id, event = ?terminal, "sandbox machine gone");
        (self.events)(terminal);
    }

    fn classify(
        &self,
        status: ExitStatus,
        started: bool,
        intent: Intent,
        flavour: Flavour,
    ) -> Outcome {
        let mut sig = status.signal();
        let mut code = status.code();
        // script(1) reports its child's death by signal N as exit status 128+N.
        if flavour == Flavour::Systemd
            && let Some(c) = code
            && c > 128
        {
            sig = Some(c - 128);
            code = None;
        }
        if intent == Intent::PowerOff {
            return Outcome::PoweredOff;
        }
        if intent == Intent::ForcedReboot {
            return Outcome::Reboot;
        }
        if !started {
            let tail = self.lock_console().tail_lines(6);
            return Outcome::Crashed(format!("sandbox setup failed ({status}): {tail}"));
        }
        // reboot(2) in a pid namespace kills its init with SIGHUP, power-off with SIGINT;
        // the tiny AMI's init exits 129 to reboot and 0 to power off.
        match (code, sig) {
            (Some(129), _) | (_, Some(1)) => Outcome::Reboot,
            (Some(0), _) | (_, Some(2)) => Outcome::PoweredOff,
            (_, Some(9)) => {
                let oom = cgroup_oom_kills(&self.record.cgroups)
                    .map(|n| format!(" (memory cgroup oom_kill={n})"))
                    .unwrap_or_default();
                Outcome::Crashed(format!("init was killed by SIGKILL{oom}"))
            }
            (Some(code), _) => Outcome::Crashed(format!("init exited with status {code}")),
            (_, Some(s)) => Outcome::Crashed(format!("init was killed by signal {s}")),
            _ => Outcome::Crashed(format!("init ended: {status}")),
        }
    }

    /// Copies the boot's output to the console until every writer is gone, and reports
    /// `Started`/`Rebooted` when the setup script's exec marker goes by. Returns whether
    /// it did.
    fn pump_console(&self, reader: &mut PipeReader, first: bool) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut started = false;
        // A pty console (systemd's) ends lines with \r\n (and systemd adds one more \r):
        // the log keeps plain \n.
        let strip_cr = self.lock_ctl().boot_flavour == Flavour::Systemd;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(instance = %self.spec.instance_id, "console read: {e}");
                    break;
                }
            };
            let cleaned: Vec<u8>;
            let data = if strip_cr {
                cleaned = buf[..n].iter().copied().filter(|&b| b != b'\r').collect();
                &cleaned[..]
            } else {
                &buf[..n]
            };
            if started {
                self.lock_console().append(data);
                continue;
            }
            pending.extend_from_slice(data);
            if let Some(pos) = find(&pending, FLAVOUR_MARKER)
                && let Some(end) = pending[pos..].iter().position(|&b| b == b'\n')
            {
                let name = String::from_utf8_lossy(&pending[pos + FLAVOUR_MARKER.len()..pos + end])
                    .into_owned();
                if let Some(flavour) = Flavour::parse(&name) {
                    let mut ctl = self.lock_ctl();
                    ctl.flavour = flavour;
                    ctl.flavour_switch = true;
                    drop(ctl);
                    if let Err(e) = fs::write(self.flavour_path(), flavour.name()) {
                        tracing::warn!(instance = %self.spec.instance_id, "cannot record init flavour: {e}");
                    }
                }
                pending.drain(pos..pos + end + 1);
            }
            if let Some(pos) = find(&pending, EXEC_MARKER) {
                let rest = pending.split_off(pos + EXEC_MARKER.len());
                pending.truncate(pos);
                self.lock_console().append(&pending);
                pending.clear();
                self.lock_ctl().started = true;
                started = true;
                (self.events)(if first {
                    MachineEvent::Started
                } else {
                    MachineEvent::Rebooted
                });
                self.lock_console().append(&rest);
            } else if pending.len() >= EXEC_MARKER.len() {
                // Keep only what could be the start of a marker split across reads.
                let keep = pending.split_off(pending.len() - (EXEC_MARKER.len() - 1));
                self.lock_console().append(&pending);
                pending = keep;
            }
        }
        self.lock_console().append(&pending);
        started
    }

    fn signal_init(&self, ctl: &Ctl, sig: Signal) {
        if let Some(pid) = ctl.unshare_pid.and_then(|p| init_pid(p, ctl.boot_flavour)) {
            let _ = send_signal(Pid::from_raw(pid), sig);
        }
    }

    /// Asks init to power off (`true`) or reboot, in its flavour's language.
    fn request(&self, ctl: &Ctl, power_off: bool) {
        match (ctl.boot_flavour, power_off) {
            (Flavour::Tiny, true) => self.signal_init(ctl, Signal::SIGUSR2),
            (Flavour::Tiny, false) => self.signal_init(ctl, Signal::SIGTERM),
            (Flavour::Systemd, false) => self.signal_init(ctl, Signal::SIGINT),
            (Flavour::Systemd, true) => {
                // SIGRTMIN+4 is outside nix's Signal enum: kill(1) sends it.
                let Some(pid) = ctl.unshare_pid.and_then(|p| init_pid(p, ctl.boot_flavour)) else {
                    return;
                };
                let Some(kill) = &self.tools.kill else {
                    tracing::warn!(instance = %self.spec.instance_id, "no kill(1) for SIGRTMIN+4; asking systemd to halt with SIGTERM is not possible");
                    return;
                };
                let out = Command::new(kill)
                    .args(["-s", SIGRTMIN_4, &pid.to_string()])
                    .env_clear()
                    .env("PATH", SAFE_PATH)
                    .stdin(Stdio::null())
                    .output();
                if let Err(e) = out {
                    tracing::warn!(instance = %self.spec.instance_id, "kill -s {SIGRTMIN_4}: {e}");
                }
            }
        }
    }
}

fn lock_set(set: &Mutex<BTreeSet<String>>) -> MutexGuard<'_, BTreeSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// An instance id reserved in the engine's running set for the duration of a launch;
/// released on drop unless the launch succeeded (the supervisor releases it then).
struct Claim<'a> {
    set: &'a Mutex<BTreeSet<String>>,
    id: String,
    kept: bool,
}

impl<'a> Claim<'a> {
    fn new(set: &'a Mutex<BTreeSet<String>>, id: &str) -> Result<Self, EngineError> {
        if !lock_set(set).insert(id.to_string()) {
            return Err(EngineError::Launch(format!(
                "machine {id} is already running"
            )));
        }
        Ok(Claim {
            set,
            id: id.to_string(),
            kept: false,
        })
    }

    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.kept {
            lock_set(self.set).remove(&self.id);
        }
    }
}

/// SIGKILLs init (the kernel then kills the whole pid namespace), then `unshare` (and
/// `script` above it for a systemd guest).
fn kill_now(ctl: &Ctl) {
    if let Some(top) = ctl.unshare_pid {
        let mut chain = vec![top];
        let depth = match ctl.boot_flavour {
            Flavour::Tiny => 1,
            Flavour::Systemd => 2,
        };
        for _ in 0..depth {
            match chain.last().copied().and_then(only_child) {
                Some(c) => chain.push(c),
                None => break,
            }
        }
        for &pid in chain.iter().rev() {
            let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Host PID of the namespace's init: the only child of `unshare`, which is our child
/// (tiny) or the child of `script` (systemd).
fn init_pid(top: i32, flavour: Flavour) -> Option<i32> {
    match flavour {
        Flavour::Tiny => only_child(top),
        Flavour::Systemd => only_child(only_child(top)?),
    }
}

fn only_child(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Quotes a word for sh.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Handle on a sandbox machine. Dropping it does not stop the machine (ec2d's lifecycle
/// manager decides that); `cleanup_orphans` finds machines nobody holds any more.
pub struct SandboxMachine {
    inner: Arc<Inner>,
}

impl SandboxMachine {
    /// Host PID of the machine's `unshare` process, while a boot is running.
    pub fn host_pid(&self) -> Option<u32> {
        self.inner
            .lock_ctl()
            .unshare_pid
            .and_then(|p| u32::try_from(p).ok())
    }
}

impl Machine for SandboxMachine {
    fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        let mut ctl = inner.lock_ctl();
        if ctl.gone {
            return;
        }
        ctl.intent = Intent::PowerOff;
        if !ctl.started {
            // Before init runs there is nobody to ask (and the setup script, as a pid
            // namespace's init without handlers, would not even receive the signal).
            kill_now(&ctl);
            return;
        }
        inner.request(&ctl, true);
        drop(ctl);
        let inner = Arc::clone(inner);
        let _ = std::thread::Builder::new()
            .name("sandbox-shutdown".into())
            .spawn(move || {
                let deadline = Instant::now() + grace;
                let mut ctl = inner.lock_ctl();
                while !ctl.gone {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::info!(instance = %inner.spec.instance_id, "grace period over, killing");
                        kill_now(&ctl);
                        return;
                    }
                    ctl = inner
                        .changed
                        .wait_timeout(ctl, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            });
    }

    fn kill(&self) {
        let mut ctl = self.inner.lock_ctl();
        if ctl.gone {
            return;
        }
        ctl.intent = Intent::PowerOff;
        kill_now(&ctl);
    }

    fn reboot(&self) {
        let inner = &self.inner;
        let mut ctl = inner.lock_ctl();
        if ctl.gone || ctl.intent == Intent::PowerOff {
            return;
        }
        if !ctl.started {
            ctl.intent = Intent::ForcedReboot;
            kill_now(&ctl);
            return;
        }
        ctl.intent = Intent::Reboot;
        inner.request(&ctl, false);
        let boot = ctl.boot;
        drop(ctl);
        let inner = Arc::clone(inner);
        let _ = std::thread::Builder::new()
            .name("sandbox-reboot".into())
            .spawn(move || {
                let deadline = Instant::now() + REBOOT_GRACE;
                let mut ctl = inner.lock_ctl();
                while !ctl.gone && ctl.boot == boot && ctl.intent == Intent::Reboot {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::info!(instance = %inner.spec.instance_id, "guest ignored reboot, resetting");
                        ctl.intent = Intent::ForcedReboot;
                        kill_now(&ctl);
                        return;
                    }
                    ctl = inner
                        .changed
                        .wait_timeout(ctl, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            });
    }

    fn console(&self) -> Vec<u8> {
        let console = self.inner.lock_console();
        let (a, b) = console.ring.as_slices();
        [a, b].concat()
    }
}

/// The console: the last 64 KiB in memory, everything appended to `console.log`.
struct Console {
    ring: VecDeque<u8>,
    log_path: PathBuf,
    log: Option<File>,
    log_len: u64,
}

impl Console {
    fn open(log_path: PathBuf) -> Console {
        let mut console = Console {
            ring: VecDeque::with_capacity(CONSOLE_RING),
            log_path,
            log: None,
            log_len: 0,
        };
        console.reopen();
        if console.log_len > CONSOLE_LOG_MAX {
            console.trim_log();
        }
        console
    }

    fn reopen(&mut self) {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            Ok(f) => {
                self.log_len = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.log = Some(f);
            }
            Err(e) => {
                tracing::warn!(path = %self.log_path.display(), "cannot open console log: {e}");
                self.log = None;
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let skip = bytes.len().saturating_sub(CONSOLE_RING);
        let bytes_kept = &bytes[skip..];
        let overflow = (self.ring.len() + bytes_kept.len()).saturating_sub(CONSOLE_RING);
        self.ring.drain(..overflow);
        self.ring.extend(bytes_kept);
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.write_all(bytes) {
                tracing::warn!(path = %self.log_path.display(), "console log write: {e}");
                self.log = None;
                return;
            }
            self.log_len += bytes.len() as u64;
            if self.log_len > CONSOLE_LOG_MAX {
                self.trim_log();
            }
        }
    }

    /// Keeps the log's last `CONSOLE_LOG_KEEP` bytes (written to a new file and renamed,
    /// so a crash mid-way leaves either version whole).
    fn trim_log(&mut self) {
        self.log = None;
        let result = (|| -> io::Result<()> {
            let data = fs::read(&self.log_path)?;
            let tail = &data[data.len().saturating_sub(CONSOLE_LOG_KEEP)..];
            let tmp = self.log_path.with_extension("log.tmp");
            fs::write(&tmp, tail)?;
            fs::rename(&tmp, &self.log_path)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.log_path.display(), "console log trim: {e}");
        }
        self.reopen();
    }

    fn tail_lines(&self, n: usize) -> String {
        let (a, b) = self.ring.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
        if tail.is_empty() {
            "no output".into()
        } else {
            tail
        }
    }
}

/// The last 64 KiB of a machine's `console.log`, for GetConsoleOutput when no machine is
/// running (after a stop, or after an ec2d restart).
pub fn console_log_tail(state_dir: &Path) -> io::Result<Vec<u8>> {
    match fs::read(state_dir.join("console.log")) {
        Ok(data) => Ok(data[data.len().saturating_sub(CONSOLE_RING)..].to_vec()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Removes a gone machine's host objects. Each step tolerates "already gone", since
/// `cleanup_orphans` may race with a supervisor doing the same.
fn teardown(tools: &Tools, record_path: &Path, record: &Record) {
    // The mount namespace died with its last process (before `unshare` was reaped), so
    // the filesystems are unmounted and the loop devices free. If one is still busy,
    // `losetup -d` marks it autoclear and the kernel detaches it when released.
    for dev in &record.loops {
        losetup_detach(tools, &dev.device);
    }
    for cg in &record.cgroups {
        remove_cgroup(cg, false);
    }
    let _ = fs::remove_dir(&record.rootfs);
    let _ = fs::remove_dir_all(&record.identity);
    let _ = fs::remove_file(record_path);
}

/// The files the guest sees added to /sys: `class/dmi/id/*` as EC2's Nitro firmware fills
/// them (cloud-init's ds-identify looks at product_uuid, product_serial and sys_vendor), and
/// `hypervisor/uuid` as EC2's Xen instances have it. cloud-init's Python side ignores DMI in a
/// container and would not know it is on AWS (so no IMDSv2 token, no Ec2Local) without the
/// latter.
fn write_identity(dir: &Path, spec: &MachineSpec) -> io::Result<()> {
    let id_dir = dir.join("class/dmi/id");
    fs::create_dir_all(&id_dir)?;
    let uuid = format!("{}\n", spec.smbios_uuid);
    let hypervisor = dir.join("hypervisor");
    fs::create_dir_all(&hypervisor)?;
    fs::write(hypervisor.join("uuid"), &uuid)?;
    fs::write(id_dir.join("product_uuid"), &uuid)?;
    fs::write(id_dir.join("product_serial"), &uuid)?;
    for f in [
        "sys_vendor",
        "bios_vendor",
        "board_vendor",
        "chassis_vendor",
    ] {
        fs::write(id_dir.join(f), "Amazon EC2\n")?;
    }
    fs::write(
        id_dir.join("board_asset_tag"),
        format!("{}\n", spec.instance_id),
    )
}

/// Builds `<records_dir>/dev-template` afresh: the character devices a guest needs, empty
/// pts/ and shm/ mount points, and the usual links. Device numbers are Linux's fixed ones.
fn make_dev_template(records_dir: &Path) -> Result<PathBuf, EngineError> {
    let dir = records_dir.join("dev-template");
    let tmp = records_dir.join("dev-template.new");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let out = Command::new("mknod")
            .args(["-m", "666"])
            .arg(tmp.join(name))
            .args(["c", &major.to_string(), &minor.to_string()])
            .env_clear()
            .env("PATH", SAFE_PATH)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(EngineError::Unavailable(format!(
                "the sandbox engine cannot create device nodes under {}: {}",
                records_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    fs::create_dir(tmp.join("pts"))?;
    fs::create_dir(tmp.join("shm"))?;
    fs::set_permissions(tmp.join("shm"), fs::Permissions::from_mode(0o1777))?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, tmp.join(name))?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    Ok(dir)
}

fn losetup_detach(tools: &Tools, device: &str) {
    let out = Command::new(&tools.losetup)
        .arg("-d")
        .arg(device)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            // Already detached (by a racing cleanup) is fine.
            if !err.contains("No such device") {
                tracing::warn!(%device, "losetup -d: {}", err.trim());
            }
        }
        Err(e) => tracing::warn!(%device, "losetup -d: {e}"),
    }
}

/// Removes a cgroup once its last process has gone (rmdir fails with EBUSY until then).
/// With `kill`, whatever is still inside is SIGKILLed; without (a teardown after our own
/// processes were reaped), anything inside belongs to someone else and is left alone.
fn remove_cgroup(dir: &Path, kill: bool) {
    // A systemd guest makes cgroups of its own below the machine's: those go first,
    // deepest first (a cgroup with children cannot be removed).
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path(), kill);
            }
        }
    }
    // Under load (hundreds of machines stopping at once) the last task can take seconds to leave.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if Instant::now() >= deadline {
                    tracing::warn!(cgroup = %dir.display(), "cannot remove cgroup: {e}");
                    return;
                }
                if kill {
                    for pid in cgroup_pids(dir) {
                        let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join(controller)
        .join(CGROUP_PARENT)
        .join(id)
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The PIDs in a cgroup and in all cgroups below it.
fn cgroup_tree_pids(dir: &Path) -> Vec<i32> {
    let mut pids = cgroup_pids(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_tree_pids(&entry.path()));
            }
        }
    }
    pids
}

fn cgroup_oom_kills(cgroups: &[PathBuf]) -> Option<u64> {
    let memory = cgroups
        .iter()
        .find(|d| d.join("memory.oom_control").exists())?;
    let text = fs::read_to_string(memory.join("memory.oom_control")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
}

fn write_record(path: &Path, record: &Record) -> Result<(), EngineError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| EngineError::Launch(format!("sandbox record: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// Every process's PID and argv.
fn processes() -> Vec<(i32, Vec<String>)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = raw
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, argv))
        })
        .collect()
}

/// A zombie counts as gone: it holds nothing but its PID.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn host_mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|p| PathBuf::from(unescape_mountinfo(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(device, backing file)` of every attached loop device, from sysfs (losetup's own
/// source, and not limited to the kernel's 64-byte `lo_file_name`).
fn loop_devices() -> Vec<(String, PathBuf)> {
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim_end_matches('\n');
            let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
            Some((format!("/dev/{name}"), PathBuf::from(backing)))
        })
        .collect()
}

fn loop_numbers(device: &str) -> Result<(u32, u32), EngineError> {
    let name = device.trim_start_matches("/dev/");
    let text = fs::read_to_string(format!("/sys/block/{name}/dev"))?;
    let parse = || -> Option<(u32, u32)> {
        let (a, b) = text.trim().split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    parse().ok_or_else(|| EngineError::Launch(format!("cannot read device numbers of {device}")))
}

/// FNV-1a of the canonical data directory, as 12 hex digits: short, stable, and not
/// needing a hash crate.
fn scope_of(data_dir: &Path) -> String {
    let path = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Instance ids name files, cgroups and shell words: keep them to a safe alphabet.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn find_tool(name: &str) -> Option<PathBuf> {
    SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Root without CAP_SYS_ADMIN (a restricted container) cannot unshare or mount either,
/// so look at the effective capability set rather than the uid.
fn has_cap_sys_admin() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cloud-init (22.4, Debian 12) calls a guest AWS when `/sys/hypervisor/uuid` starts with
    /// `ec2`, the only identity its Python side reads in a container; ds-identify reads DMI.
    /// Both are laid out relative to /sys, which the overlay covers.
    #[test]
    fn identity_has_dmi_and_a_hypervisor_uuid() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = MachineSpec {
            instance_id: "i-0123456789abcdef0".into(),
            vcpus: 1,
            memory_mib: 256,
            hostname: "ip-10-0-0-5".into(),
            smbios_uuid: "ec2e1f2a-0000-4000-8000-000000000001".into(),
            root_disk: PathBuf::from("/nonexistent"),
            disks: Vec::new(),
            kernel: None,
            initrd: None,
            cmdline: String::new(),
            init_env: Vec::new(),
            nics: Vec::new(),
            state_dir: tmp.path().to_path_buf(),
        };
        write_identity(tmp.path(), &spec).unwrap();
        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        let uuid = "ec2e1f2a-0000-4000-8000-000000000001\n";
        assert_eq!(read("hypervisor/uuid"), uuid);
        assert_eq!(read("class/dmi/id/product_uuid"), uuid);
        assert_eq!(read("class/dmi/id/product_serial"), uuid);
        assert_eq!(read("class/dmi/id/sys_vendor"), "Amazon EC2\n");
        assert_eq!(
            read("class/dmi/id/board_asset_tag"),
            "i-0123456789abcdef0\n"
        );
        assert!(!tmp.path().join("dmi").exists());
    }
}
