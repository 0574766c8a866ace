//! The union's tables, data only: nodes, their state in the layers and the inode table, open
//! handles, per-node descriptors, listings being read, the layers of one mount, and the pause
//! gate.

pub mod gate;
pub mod handles;
pub mod layer;
pub mod listings;
pub mod node;
pub mod node_fds;
pub mod node_state;
pub mod node_table;
