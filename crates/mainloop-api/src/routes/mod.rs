//! The API's resource handlers, one module per resource. Each handler authenticates
//! (its first argument), decodes the request, calls the engine and shapes the reply.

pub mod agents;
pub mod chat;
pub mod digests;
pub mod events;
pub mod health;
pub mod inbox;
pub mod model;
pub mod notes;
pub mod notifications;
pub mod preview;
pub mod projects;
pub mod runner_git;
pub mod runner_state;
pub mod runners;
pub mod search;
pub mod system;
pub mod tasks;
pub mod usage;
pub mod webhooks;
