//! Integration tests, one binary. Each module covers one area; helpers live in `common`.

mod api;
mod casts;
mod check;
mod cli;
mod cli_diff;
mod cli_output;
mod common;
mod containers_tar;
mod containers_zip;
mod curves;
mod dcp;
mod diff;
mod fixtures;
mod hf;
mod modules;
mod never_lose;
mod no_panic;
mod options;
mod pickle_vectors;
mod scan;
mod scan_battery;
mod stats;
mod transform;
#[cfg(feature = "tch")]
mod verify;
mod write;
mod zero;
