//! The data plane at run time: the fabric's ports wired to machines, the services it hosts
//! (IMDS) and the host's access to public addresses, all fed from the store.
//!
//! `net/` holds the packet logic, pure and synchronous; this module owns the threads, the
//! tap devices and the listeners, and re-reads the records whenever the control plane says
//! something that moves packets has changed ([`DataPlane::sync`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// The running data plane. Cheap to share; every method may be called from any thread.
#[derive(Default)]
pub struct DataPlane {
    /// Bumped by every [`DataPlane::sync`], so a worker can tell it has fresh work.
    generation: AtomicU64,
}

impl DataPlane {
    pub fn new() -> Self {
        Self::default()
    }

    /// Security groups, addresses, ENIs or metadata options changed: re-read them.
    pub fn sync(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}
