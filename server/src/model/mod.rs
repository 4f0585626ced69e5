//! Shapes generated from the official models (see `codegen/`). Never edited by hand.

mod generated;
pub use generated::*;

/// IAM's shapes, from botocore's IAM model (`codegen/iam-operations.txt`). A module of its
/// own, since IAM's `Tag`, `Role`… would clash with EC2's names.
#[path = "iam_generated.rs"]
pub mod iam;
