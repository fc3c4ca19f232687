//! Integration tests, one binary. Each module covers one area; helpers live in `common`.

mod common;
mod cli;
mod fixtures;
mod pickle_vectors;
mod casts;
mod transform;
mod diff;
mod write;
mod no_panic;
#[cfg(feature = "tch")]
mod verify;
mod scan;
