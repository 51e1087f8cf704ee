//! logferry's destinations: each maps one service's protocol onto the [`logferry_sink::Sink`]
//! contract and the [`logferry_sink::store::LedgerStore`] of small objects beside its data.
//!
//! A destination sends a batch once and reports an [`logferry_sink::Outcome`]; spooling,
//! retry, splitting and dead letters belong to the pipeline.

pub mod azure_auth;
pub mod azure_blob;
pub mod azure_monitor;
pub mod beneath;
pub mod dir_store;
pub mod directory;
pub mod http;
pub mod otlp;
pub mod s3;
mod s3_answers;
pub mod s3_ledger;
pub mod tls;
pub mod tls_files;

pub use directory::DirectorySink;
pub use s3::{S3Options, S3Sink, StaticKeys};
