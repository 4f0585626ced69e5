//! Shapes generated from the official EC2 model (see `codegen/`). Never edited by hand.

mod generated;
pub use generated::*;
