//! FUSE dispatch: the `fuser::Filesystem` implementation that unpacks each request, runs the
//! union operation and replies.

pub mod dispatch;
mod init;
mod listing;
mod opening;
mod replies;
