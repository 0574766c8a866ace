//! The union's tables, data only: nodes (the inode table), open handles, listings being read, the layers of one
//! mount, and the pause gate.

pub mod gate;
pub mod handles;
pub mod layer;
pub mod listings;
pub mod node;
