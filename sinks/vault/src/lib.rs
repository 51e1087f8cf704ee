//! logferry's client-side encryption: the LFENC object format ([`crypt`]), one data key per
//! tenant-hour kept wrapped in a ledger beside the data ([`ledger`], [`keys`]), the KEK
//! providers ([`ledger::LocalKek`], [`kms`], [`keyvault`]), crypto-shredding ([`shred`]) and
//! the sink wrapper that seals each batch before it is sent ([`encrypted`]).

pub mod crypt;
pub mod encrypted;
pub mod keys;
pub mod keyvault;
pub mod kms;
pub mod ledger;
pub mod shred;
