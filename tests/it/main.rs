//! Integration tests: the store story and the binary end to end, on SQLite and, when
//! `VALHALLA_TEST_POSTGRES_URL` is set, on PostgreSQL; rate limits count in memory and, when
//! `VALHALLA_TEST_REDIS_URL` is set, in Redis.

mod api;
mod calendar;
mod cli;
mod counters;
mod enforce;
mod freeze;
mod grpc;
mod hostile;
mod hostile_http;
mod notify;
mod secrets;
mod status;
mod store;
mod support;
mod tools;
mod watch;
