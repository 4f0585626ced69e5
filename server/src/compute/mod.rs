//! Instance lifecycle: choosing an engine, launching machines, and turning their events
//! into instance states in the store.

pub mod engine;
pub mod microvm;
pub mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Engine, EngineError, EventSink, Machine, MachineEvent, MachineSpec};

use crate::store::Store;

/// How long a guest gets to power off before it is forced, as EC2 allows a few minutes
/// but tests want it quick.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    Auto,
    Microvm,
    Sandbox,
    None,
}

/// What the host offers, for `--engine auto`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostFacts {
    pub kvm_present: bool,
    /// PVM is a software hypervisor behind /dev/kvm; it cannot run stock kernels usefully.
    pub kvm_is_pvm: bool,
    pub cpu_has_virt: bool,
}

pub fn host_facts() -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    HostFacts {
        kvm_present: Path::new("/dev/kvm").exists(),
        kvm_is_pvm: Path::new("/sys/module/kvm_pvm").exists(),
        cpu_has_virt,
    }
}

/// One instance's machine and where it is scoped.
struct Live {
    machine: Box<dyn Machine>,
}

/// The machines this process runs.
pub struct Compute {
    engine: Option<Arc<dyn Engine>>,
    /// Why there is no engine, for error messages and the health endpoint.
    unavailable: Option<String>,
    pub engine_name: String,
    pub host: HostFacts,
    data_dir: PathBuf,
    machines: Mutex<HashMap<String, Live>>,
    pub grace: Duration,
    /// Set while ec2d itself shuts down: machines stop, but their instances keep the state
    /// they had, so the next start brings them back as after a host reboot.
    exiting: std::sync::atomic::AtomicBool,
}

/// Where an event for an instance must be recorded.
#[derive(Debug, Clone)]
pub struct Scope {
    pub account: String,
    pub region: String,
    pub instance_id: String,
}

/// Applies a machine event to the store; provided by the API layer, which owns the
/// instance records.
pub type EventHandler = Arc<dyn Fn(&Store, &Scope, MachineEvent) + Send + Sync>;

impl Compute {
    pub fn new(choice: EngineChoice, data_dir: &Path) -> Compute {
        let host = host_facts();
        let hardware_kvm = host.kvm_present && !host.kvm_is_pvm && host.cpu_has_virt;
        let sandbox = || -> (Option<Arc<dyn Engine>>, Option<String>) {
            match sandbox::SandboxEngine::new(data_dir) {
                Ok(e) => (Some(Arc::new(e)), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let microvm = || -> (Option<Arc<dyn Engine>>, Option<String>) {
            match microvm::MicrovmEngine::new() {
                Ok(e) => (Some(Arc::new(e)), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let (engine, unavailable) = match choice {
            EngineChoice::None => (None, Some("ec2d was started with --engine none".into())),
            EngineChoice::Microvm => microvm(),
            EngineChoice::Sandbox => sandbox(),
            EngineChoice::Auto if hardware_kvm => microvm(),
            EngineChoice::Auto => {
                tracing::info!(
                    ?host,
                    "no hardware KVM (or a PVM /dev/kvm): using the sandbox engine"
                );
                sandbox()
            }
        };
        let engine_name = engine
            .as_ref()
            .map(|e| e.name().to_string())
            .unwrap_or_else(|| "none".to_string());
        match &unavailable {
            None => tracing::info!(engine = %engine_name, ?host, "instance engine chosen"),
            Some(why) => tracing::warn!(?host, "no instance engine: {why}"),
        }
        Compute {
            engine,
            unavailable,
            engine_name,
            host,
            data_dir: data_dir.to_path_buf(),
            machines: Mutex::new(HashMap::new()),
            grace: DEFAULT_GRACE,
            exiting: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub fn state_dir(&self, instance_id: &str) -> PathBuf {
        self.data_dir.join("instances").join(instance_id)
    }

    /// Starts a machine; its events are applied to the store by `on_event`.
    pub fn launch(
        self: &Arc<Self>,
        store: Arc<Store>,
        scope: Scope,
        spec: MachineSpec,
        on_event: EventHandler,
    ) -> Result<(), EngineError> {
        let engine = self.engine.clone().ok_or_else(|| {
            EngineError::Unavailable(self.unavailable.clone().unwrap_or_default())
        })?;
        std::fs::create_dir_all(&spec.state_dir)?;
        let me = Arc::downgrade(self);
        let id = scope.instance_id.clone();
        let sink: EventSink = Arc::new(move |event: MachineEvent| {
            let terminal = matches!(event, MachineEvent::PoweredOff | MachineEvent::Crashed(_));
            let Some(me) = me.upgrade() else { return };
            if !me.exiting.load(std::sync::atomic::Ordering::SeqCst) {
                on_event(&store, &scope, event);
            }
            if terminal {
                me.forget(&scope.instance_id);
            }
        });
        let machine = engine.launch(spec, sink)?;
        self.lock().insert(id, Live { machine });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A poisoned map still holds valid machines; keep serving.
        self.machines.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    pub fn shutdown(&self, id: &str, force: bool) -> bool {
        match self.lock().get(id) {
            Some(l) => {
                if force {
                    l.machine.kill();
                } else {
                    l.machine.shutdown(self.grace);
                }
                true
            }
            None => false,
        }
    }

    pub fn reboot(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(l) => {
                l.machine.reboot();
                true
            }
            None => false,
        }
    }

    /// The most recent 64 KiB of console output, across boots, stops and restarts of ec2d:
    /// engines append everything to the instance's console log.
    pub fn console(&self, id: &str) -> Vec<u8> {
        let log = self.state_dir(id).join("console.log");
        let data = std::fs::read(log).unwrap_or_default();
        let keep = data.len().saturating_sub(64 * 1024);
        data[keep..].to_vec()
    }

    /// Cleans up after machines that are not live (e.g. left by a crash of ec2d).
    pub fn cleanup_orphans(&self, live: &[String]) {
        if let Some(e) = &self.engine
            && let Err(err) = e.cleanup_orphans(live)
        {
            tracing::warn!(error = %err, "cleaning up orphaned machines failed");
        }
    }

    /// Stops every machine, for ec2d's own shutdown, waiting up to the grace period.
    pub fn shutdown_all(&self) {
        self.exiting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in &ids {
            self.shutdown(id, false);
        }
        let deadline = std::time::Instant::now() + self.grace + Duration::from_secs(2);
        while !self.lock().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<String> = self.lock().keys().cloned().collect();
        for id in left {
            self.shutdown(&id, true);
        }
    }
}
