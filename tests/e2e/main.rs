//! End-to-end tests: real roles on port 0, real clients.

#[allow(dead_code)]
mod common;
mod backpressure;
mod bad_input;
mod durability;
mod open_data;
mod otlp_clients;
mod storage;
