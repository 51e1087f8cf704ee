//! logferry's pipeline as a library: the `logferry` binary is a thin CLI over it, and the
//! benchmarks drive its hot path directly.

pub mod ack;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod decode;
pub mod deliver;
pub mod describe;
pub mod encode;
pub mod encryption;
pub mod export;
pub mod fields;
pub mod integrity;
pub mod mask;
pub mod ops;
pub mod otlp;
pub mod parquet;
pub mod pipeline;
pub mod private_fs;
pub mod shape;
pub mod shutdown;
pub mod source;
pub mod spool;
pub mod timefmt;
pub mod whole;
