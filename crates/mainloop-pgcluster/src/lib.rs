//! PostgreSQL clusters mainloop runs itself, on the server binaries of the machine.
//!
//! The building blocks ([`Binaries`], [`Runner`], [`PgCtl`]) are shared by the
//! throwaway test clusters of `mainloop-testpg` and by [`LocalCluster`], the persistent
//! cluster under the data directory that task databases are made on when no
//! `workers.task_database_url` is configured. Everything here is blocking; callers run
//! it on a blocking thread.

mod error;
mod local;
mod runner;
mod server;

pub use error::PgClusterError;
pub use local::{AdminUrl, LocalCluster, database_count};
pub use runner::{Binaries, Runner, run, tail, tail_of_file};
pub use server::{ClusterFiles, PgCtl, free_port};
