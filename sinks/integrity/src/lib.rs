//! logferry's integrity chain: every delivered batch of a stream is an entry hashed onto the
//! one before it; signed digests list an hour's entries and chain onto the previous digest.
//!
//! [`chain`] is the format, [`signing`] the Ed25519 keys, [`chained`] the sink wrapper that
//! puts the stored bytes' hash on the object and records the delivery through a
//! [`chained::Recorder`] the binary provides (its journal lives in `data_dir`).

pub mod chain;
pub mod chained;
pub mod signing;
