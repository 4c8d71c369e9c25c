//! The Kubernetes launcher against the fake Kubernetes API (`mainloop-fake-kube`),
//! through the real kube-rs client: what each call makes, its idempotence, a run's state
//! through its pod's life, namespaces that terminate, faults and outages, the task's
//! database from CloudNativePG, the running runner's address, and the RBAC the launcher
//! needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod address;
mod common;
mod database;
mod faults;
mod forget;
mod prepare;
mod rbac;
mod runs;
mod tls;
