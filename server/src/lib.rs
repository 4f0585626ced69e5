//! ec2d: an AWS-compatible EC2 emulator. See the README and `../shared/DESIGN.md`.

pub mod api;
pub mod auth;
pub mod compute;
pub mod dataplane;
pub mod error;
pub mod http;
pub mod imds;
pub mod model;
pub mod net;
pub mod protocol;
pub mod regions;
pub mod storage;
pub mod store;
