//! The EC2 Query protocol: decoding requests, encoding responses and errors.

pub mod query;
pub mod types;
pub mod xml;
