//! One cluster's files and `pg_ctl` over them: initdb, start (retried when the port was
//! taken or a killed server's processes are still exiting), stop, restart.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::{Binaries, PgClusterError, Runner, run, tail_of_file};

/// Ports are picked by binding port 0 and releasing it, so another process can grab the port
/// before postgres binds it; a few retries make that race practically irrelevant.
const PORT_ATTEMPTS: u32 = 3;

/// A server killed outright leaves its children for a moment, holding the old shared
/// memory; a new postmaster refuses to start until they are gone.
const BUSY_ATTEMPTS: u32 = 20;
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// Where a cluster's files are.
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    /// The working directory of its programs (they may not be able to read ours).
    pub root: PathBuf,
    /// The data directory (`PGDATA`).
    pub data: PathBuf,
    /// The server log.
    pub log: PathBuf,
}

/// `initdb` and `pg_ctl` for one cluster, run as the [`Runner`].
#[derive(Clone, Debug)]
pub struct PgCtl {
    bins: Binaries,
    runner: Runner,
    files: ClusterFiles,
}

impl PgCtl {
    #[must_use]
    pub fn new(bins: Binaries, runner: Runner, files: ClusterFiles) -> Self {
        Self {
            bins,
            runner,
            files,
        }
    }

    #[must_use]
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    #[must_use]
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    #[must_use]
    pub fn files(&self) -> &ClusterFiles {
        &self.files
    }

    /// `initdb -D <data> <args>`.
    ///
    /// # Errors
    /// When initdb fails (its output's tail in the error).
    pub fn initdb<I, S>(&self, data: &Path, args: I) -> Result<(), PgClusterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut initdb = self.runner.command(&self.bins.initdb, &self.files.root);
        initdb.arg("-D").arg(data).args(args);
        run(&mut initdb).map(drop)
    }

    /// `pg_ctl <action>` on the data directory, waiting (at most 60 s) for it to finish;
    /// stops and restarts are fast (open connections are cut).
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn run(&self, action: &str, options: Option<&str>) -> Result<Output, PgClusterError> {
        let mut pg_ctl = self.runner.command(&self.bins.pg_ctl, &self.files.root);
        pg_ctl
            .arg("-D")
            .arg(&self.files.data)
            .arg("-l")
            .arg(&self.files.log)
            .args(["-w", "-t", "60", "-m", "fast"]);
        if let Some(options) = options {
            pg_ctl.args(["-o", options]);
        }
        pg_ctl.arg(action);
        run(&mut pg_ctl)
    }

    /// Starts the server with the server options `options_for(port)` (a string the
    /// shell splits) on `pick(true)`'s port, on `pick(false)`'s when that one turned out
    /// taken. Returns the port and the options it runs with.
    ///
    /// # Errors
    /// [`PgClusterError::StartFailed`] with the log's tail when it does not come up.
    pub fn start(
        &self,
        mut pick: impl FnMut(bool) -> Result<u16, PgClusterError>,
        options_for: impl Fn(u16) -> String,
    ) -> Result<(u16, String), PgClusterError> {
        let log = &self.files.log;
        // Only this start's lines: a kept cluster's log holds earlier runs' failures too.
        let from = std::fs::metadata(log).map_or(0, |m| m.len());
        let mut port = pick(true)?;
        let mut port_tries = 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let options = options_for(port);
            let err = match self.run("start", Some(&options)) {
                Ok(_) => return Ok((port, options)),
                Err(err) => err,
            };
            let log_tail = tail_of_file(log, from);
            let port_taken =
                log_tail.contains("could not bind") || log_tail.contains("already in use");
            let busy = log_tail.contains("is still in use");
            if port_taken && port_tries < PORT_ATTEMPTS {
                port_tries += 1;
                port = pick(false)?;
            } else if busy && attempt < BUSY_ATTEMPTS {
                std::thread::sleep(BUSY_PAUSE);
            } else {
                return Err(PgClusterError::StartFailed {
                    data_dir: self.files.data.clone(),
                    log: log.clone(),
                    attempts: attempt,
                    detail: err.to_string(),
                    log_tail,
                });
            }
        }
    }
}

/// A TCP port free on 127.0.0.1 right now.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16, PgClusterError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| PgClusterError::io("picking a free TCP port on 127.0.0.1", e))
}
