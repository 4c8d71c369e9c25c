//! End-to-end tests of the fake Kubernetes API through the real kube-rs client and
//! runtime watcher.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cnpg;
mod common;
mod crud;
mod faults;
mod jobs;
mod watch;
