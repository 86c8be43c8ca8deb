//! Integration tests: the store story and the binary end to end, on SQLite and, when
//! `VALHALLA_TEST_POSTGRES_URL` is set, on PostgreSQL.

mod api;
mod cli;
mod enforce;
mod hostile;
mod hostile_http;
mod store;
mod support;
mod tools;
mod watch;
