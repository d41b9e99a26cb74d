//! permitd's integration tests: one binary (`autotests = false`), each module a concern, all
//! against the real server on 127.0.0.1:0 with real clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod admin;
mod bad_input;
mod batch;
mod bench_cli;
mod cache;
mod caps;
mod certs;
mod cli;
mod cluster;
mod connect;
mod connect_client;
mod coord;
mod crash;
mod dash_http;
mod dash_metrics;
mod dash_watch_cli;
mod dashboard;
mod durability;
mod engine;
mod faults;
mod feedback;
mod group_commit;
mod idempotency;
mod lease;
mod load;
mod pauses;
mod queue;
mod rls;
mod security;
mod sequential;
mod service;
mod soak;
mod spawned;
mod summaries;
mod support;
mod tls;
mod watch;
