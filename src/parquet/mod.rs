//! `encoding = "parquet"`: one Parquet file per sealed batch, built on a compression thread
//! from the batch's masked records ([`encode`]), with the columns of [`schema`] read by
//! [`extract`]. `logferry schema` prints the tables engines read them with ([`ddl`]).

pub mod ddl;
pub mod encode;
pub mod extract;
pub mod schema;

use std::sync::{Condvar, Mutex};

use prometheus_client::metrics::counter::Counter;

pub use encode::Records;
pub use schema::Spec;

/// A sink's Parquet encoder: its columns, the count of values left null because they did not
/// fit their column's type, and the one file being built at a time.
pub struct Stage {
    pub spec: Spec,
    pub mistyped: Counter,
    building: Mutex<bool>,
    done: Condvar,
}

impl Stage {
    pub fn new(spec: Spec, mistyped: Counter) -> Stage {
        Stage {
            spec,
            mistyped,
            building: Mutex::new(false),
            done: Condvar::new(),
        }
    }

    /// Waits (on the source thread) until no file of this stage is being built, and takes the
    /// turn: a batch held whole is never queued behind another one.
    pub fn reserve(&self) {
        let mut b = self.building.lock().unwrap_or_else(|p| p.into_inner());
        while *b {
            b = self.done.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        *b = true;
    }

    fn release(&self) {
        *self.building.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.done.notify_one();
    }

    /// Encodes one batch (on a compression thread) and gives the turn back.
    pub fn encode(&self, records: Records) -> std::io::Result<Vec<u8>> {
        let res = encode::encode(&self.spec, records);
        self.release();
        let e = res.map_err(std::io::Error::other)?;
        if e.mistyped > 0 {
            self.mistyped.inc_by(e.mistyped);
        }
        Ok(e.bytes)
    }
}
