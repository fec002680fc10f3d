//! The subcommands. Each turns parsed arguments into work and user-facing output.

pub mod ask;
pub mod dev;
