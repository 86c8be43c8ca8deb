//! valhalla-ops: the operations control plane of the Valhalla API platform.
//!
//! The desired state (rate-limit rules, clients, maintenance, feature flags, the deployment
//! profile) lives in YAML in git; the reconciler makes the database match it, atomically, and
//! leaves emergency overrides made over HTTP alone while they last.
//!
//! # Layout
//!
//! From the bottom up; each module imports only those above it in this list.
//!
//! - [`text`]: values and messages made safe to print (one line, escaped, cut).
//! - [`domain`]: validated newtypes and enums (`ClientName`, `Scope`, `Mode`, …).
//! - [`calendar`]: when windows are open: a cron rule's occurrences on the time line, the
//!   daylight-saving rules, merging, and a cache of what is open around now.
//! - [`model`]: the resources, as the desired state and the store both hold them.
//! - [`clock`], [`backoff`], [`shutdown`]: the one clock, exponential backoff, and signals
//!   (graceful on the first, forced on the second).
//! - [`desired`]: the state files: reading them safely, loading with positioned errors, export.
//! - [`plan`]: the pure planner, `plan(desired, actual, now)`, and its renderers.
//! - [`event`]: what the people on call are told: one event, made by the change that caused it.
//! - [`notify`]: each event in its receiver's form: a signed CloudEvent, a Slack message, a
//!   PagerDuty alert.
//! - [`mode`]: the effective maintenance mode (override, else window, else git); pure.
//! - [`limit`]: rate limiting without I/O: the rule table, sliding-window counters, decisions.
//! - [`store`]: [`store::Db`] over PostgreSQL or SQLite: queries by job, rows, bulk writes, and
//!   the change follower (LISTEN/NOTIFY, the change log's revision).
//! - [`mirror`]: the one cache of the store, its rows followed through the change log, which
//!   the replica and the watch loop both read.
//! - [`reconcile`]: load → plan → apply under the single-writer lock; saved plans.
//! - [`outage`]: a store outage logged once per transition, with counts, not once per request.
//! - [`api_error`]: the HTTP API's error type and JSON body, for the server and the layers.
//! - [`auth`]: the key a request presents, the caller it identifies, role checks.
//! - [`counting`]: where a replica counts: its memory, or one Redis shared by every replica,
//!   with each rule's `on_outage` policy while Redis is unreachable.
//! - [`replica`]: a server's cached view of the store and its counters, reloaded when the
//!   store's change count moves, and usage snapshots.
//! - [`outbox`]: a server's part in the notifications outbox: what time tells (overrides
//!   expired and expiring, windows opening and closing) and the shared counters' outages,
//!   written once whichever replica notices first; and delivery to the sinks, at least once.
//! - [`enforce`]: tower layers any axum service can mount: the rate limiter and the freeze.
//! - [`grpc`]: the gateways' door: Envoy's rate limit service over gRPC, decided as the
//!   layers decide, with health checking and reflection.
//! - [`watch`]: continuous reconciliation: the directory watch, whole passes, the error policy.
//! - [`server`]: the axum HTTP server: routes per resource, role extractors, the accept loop.
//! - [`cli`]: the command line, one module per subcommand.

pub mod api_error;
pub mod auth;
pub mod backoff;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod counting;
pub mod desired;
pub mod domain;
pub mod enforce;
pub mod event;
pub mod grpc;
pub mod limit;
pub mod mirror;
pub mod mode;
pub mod model;
pub mod notify;
pub mod outage;
pub mod outbox;
pub mod plan;
pub mod reconcile;
pub mod replica;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod text;
pub mod watch;
