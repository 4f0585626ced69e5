//! A rust-vmm microVM. It knows nothing of EC2.
