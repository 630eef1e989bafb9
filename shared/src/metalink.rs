//! Metalink writer and parser (being written).
