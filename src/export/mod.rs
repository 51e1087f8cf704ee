//! `logferry export`: the records of a time range (and tenants, and conditions) read back from
//! a sink's archive, each object checked against the signed digests when the sink has
//! `integrity`, decrypted when it has `encryption`, and decompressed.
//!
//! Only the objects whose key can hold the selection are listed and judged: the key
//! template's time parts and tenant field give the prefixes, a listed key's time unit must
//! overlap the range. Objects are read `concurrency` at a time and written out in key order;
//! each one's records pass through a small bounded channel, so memory is a few objects
//! whatever the range.

pub mod filter;
pub mod object;
pub mod parquet_out;
pub mod plan;
pub mod receipt;
mod run;
mod summary;
mod trust;

pub use run::{export, tenant_field, ExportError, Request};
pub use summary::{Problem, Summary};
