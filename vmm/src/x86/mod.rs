//! x86_64 specifics: boot state, CPUID.

pub mod boot;
pub mod cpuid;
