//! Containers, read the way PyTorch's loaders read them. One layer, shared by the readers
//! ([`crate::read`]) and the scanner ([`crate::scan`]), so the two can never disagree about which
//! bytes a file holds.

pub mod index;
pub mod zip;
pub mod zip_readings;
