//! The store's queries, one file per job, each adding its methods to [`super::Db`] (what callers
//! use) and to the transaction type (steps that run inside another write).

mod admin;
mod clients;
mod deliveries;
mod events;
mod feed;
mod migrate;
mod outages;
mod overrides;
mod reconcile;
mod rules;
mod settings;
mod usage;
mod windows;

pub(in crate::store) use feed::REVISION;
pub use feed::{Change, Followed, RowIds, Rows};
pub(super) use migrate::migrate_on;
