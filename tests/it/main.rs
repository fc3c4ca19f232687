//! Integration tests, one binary. Each module covers one area; helpers live in `common`.

mod common;
mod cli;
mod fixtures;
mod pickle_vectors;
