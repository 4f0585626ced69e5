pub mod model;
pub mod protocol;
