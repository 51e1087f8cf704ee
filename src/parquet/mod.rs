//! `encoding = "parquet"`: one Parquet file per sealed batch, built on a compression thread
//! from the batch's masked records ([`encode`]), with the columns of [`schema`] read by
//! [`extract`]. `logferry schema` prints the tables engines read them with ([`ddl`]).

pub mod ddl;
pub mod encode;
pub mod extract;
pub mod schema;

use prometheus_client::metrics::counter::Counter;

pub use encode::Records;
pub use schema::Spec;

/// A sink's Parquet encoder: its columns and the count of values left null because they did
/// not fit their column's type.
pub struct Stage {
    pub spec: Spec,
    pub mistyped: Counter,
}

impl Stage {
    /// Encodes one batch (on a compression thread).
    pub fn encode(&self, records: Records) -> std::io::Result<Vec<u8>> {
        let e = encode::encode(&self.spec, records).map_err(std::io::Error::other)?;
        if e.mistyped > 0 {
            self.mistyped.inc_by(e.mistyped);
        }
        Ok(e.bytes)
    }
}
