//! The integration suite, one test binary: each module is one area (the
//! API, articles, backups, ...), every test drives a real server over a
//! real socket. One binary, not one per file: each file as its own binary
//! compiled and linked the shared harness and the whole crate once more,
//! most of CI's build time. `faults` stays its own binary (its failpoints
//! are process-wide), and so do the tests that need a browser, Python or
//! etcd (`test = false` targets, run by name).
//!
//! `FACTCHECK_TEST_STORE=etcd` runs it on the etcd engine
//! (`tests/common/etcd.rs`); tests named `sled_*` are sled's own.

mod common;

mod api;
mod articles;
mod as_of;
mod backup;
mod batch;
mod binary;
mod cli;
mod grpc_web;
mod hardening;
mod limits;
mod operations;
mod process;
mod reanchor;
mod review_workflow;
mod reviews;
mod scripting;
mod sources;
mod trust;
mod w3c;
mod watch;
