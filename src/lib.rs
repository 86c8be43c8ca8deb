//! valhalla-ops: the operations control plane of the Valhalla API platform.
//!
//! The desired state (rate-limit rules, clients, maintenance, feature flags, the deployment
//! profile) lives in YAML in git; the reconciler makes the database match it, atomically, and
//! leaves emergency overrides made over HTTP alone while they last.
//!
//! # Layout
//!
//! - [`domain`]: validated newtypes and enums (`ClientName`, `Scope`, `Mode`, …).
//! - [`model`]: the resources, as the desired state and the store both hold them.
//! - [`desired`]: the state files: loading with positioned errors, and export.
//! - [`plan`]: the pure planner, `plan(desired, actual, now)`, and its renderers.
//! - [`store`]: the `Store` trait and its PostgreSQL and SQLite backends.
//! - [`reconcile`]: load → plan → apply under the single-writer lock; saved plans.
//! - [`mode`]: the effective maintenance mode (override, else window, else git).
//! - [`server`]: the axum HTTP server: routes, API keys and roles, JSON errors.
//! - [`auth`]: the key a request presents, the caller it identifies, role checks.
//! - [`api_error`]: the HTTP API's error type and JSON body, for the server and the layers.
//! - [`cli`]: the command line, one module per subcommand.
//! - [`clock`], [`backoff`], [`shutdown`]: the one clock, exponential backoff, and signals
//!   (graceful on the first, forced on the second).
//! - [`text`]: values and messages made safe to print (one line, escaped, cut).

pub mod api_error;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod desired;
pub mod domain;
pub mod enforce;
pub mod limit;
pub mod mode;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod replica;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod text;
pub mod watch;
