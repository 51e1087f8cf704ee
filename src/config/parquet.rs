//! A sink's `compression` and `parquet` options: the object's wrapping for NDJSON and JSON
//! arrays, or with `encoding = "parquet"` the column codec and the columns.

use std::sync::Arc;

use logferry_sink::{Compression, Encoding, KeyTemplate};

use super::raw::{self, CompressionName};
use super::{Collector, SinkKind};
use crate::parquet::schema::{Codec, ColType, Column, SchemaName, Spec, RESERVED};

/// The default key of a parquet sink: Hive-style partitions engines prune by.
pub const DEFAULT_PARQUET_KEY: &str =
    "source={source}/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet";
/// Parquet wants large row groups: `max_bytes` counts input bytes. 32 MiB keeps the peak near
/// 140 MB (a batch filling, one waiting and one being built; 64 MiB took it to 240 MB).
pub const DEFAULT_PARQUET_MAX_BYTES: u64 = 32 << 20;

/// The object's compression (none for Parquet: the file is never wrapped) and the Parquet
/// encoder's spec.
pub(super) fn resolve(
    p: &str,
    common: &raw::SinkCommon,
    kind: &SinkKind,
    key: Option<&KeyTemplate>,
    c: &mut Collector,
) -> (Compression, Option<Arc<Spec>>) {
    let level = common.compression_level;
    if common.encoding != Encoding::Parquet {
        if common.parquet.is_some() {
            c.add(format!("{p}.parquet"), "needs encoding = \"parquet\"");
        }
        let compression = match common.compression {
            None | Some(CompressionName::Gzip) => Compression::Gzip,
            Some(CompressionName::Zstd) => Compression::Zstd,
            Some(CompressionName::None) => Compression::None,
            Some(CompressionName::Snappy) => {
                c.add(
                    format!("{p}.compression"),
                    "snappy is a Parquet column codec: use it with encoding = \"parquet\" (gzip, zstd or none here)",
                );
                Compression::Gzip
            }
        };
        let level_ok = match (compression, level) {
            (_, None) => true,
            (Compression::Gzip, Some(l)) => (0..=9).contains(&l),
            (Compression::Zstd, Some(l)) => (1..=22).contains(&l),
            (Compression::None, Some(_)) => false,
        };
        if !level_ok {
            c.add(
                format!("{p}.compression_level"),
                "out of range: gzip takes 0-9, zstd 1-22, none takes no level",
            );
        }
        return (compression, None);
    }
    let object_store = match kind {
        SinkKind::Directory { .. } | SinkKind::S3(_) => true,
        SinkKind::AzureBlob(o) => {
            o.blob_type != logferry_destinations::azure_blob::BlobType::Append
        }
        _ => false,
    };
    if !object_store {
        c.add(
            format!("{p}.encoding"),
            "parquet is written by the directory, s3 and azure_blob (block blob) sinks",
        );
    }
    if common.envelope.is_some() {
        c.add(
            format!("{p}.envelope"),
            "a Parquet file has no envelope; remove it",
        );
    }
    if key.is_some_and(|k| !k.as_str().ends_with(".parquet")) {
        c.add(
            format!("{p}.key"),
            "a Parquet object's key ends in .parquet (engines and logferry schema find files by it)",
        );
    }
    let codec = match common.compression {
        None | Some(CompressionName::Zstd) => Codec::Zstd,
        Some(CompressionName::Snappy) => Codec::Snappy,
        Some(CompressionName::Gzip) => Codec::Gzip,
        Some(CompressionName::None) => Codec::None,
    };
    let level_ok = match (codec, level) {
        (_, None) => true,
        (Codec::Gzip, Some(l)) => (0..=9).contains(&l),
        (Codec::Zstd, Some(l)) => (1..=22).contains(&l),
        (Codec::Snappy | Codec::None, Some(_)) => false,
    };
    if !level_ok {
        c.add(
            format!("{p}.compression_level"),
            "out of range: zstd takes 1-22, gzip 0-9, snappy and none take no level",
        );
    }
    let table = common.parquet.clone().unwrap_or_default();
    let schema = match table.schema.as_deref() {
        None => SchemaName::Generic,
        Some(s) => SchemaName::parse(s).unwrap_or_else(|| {
            c.add(
                format!("{p}.parquet.schema"),
                format!("unknown schema {s:?}: generic, platform_job or platform_audit"),
            );
            SchemaName::Generic
        }),
    };
    let mut user: Vec<Column> = Vec::new();
    for (i, col) in table.columns.iter().enumerate() {
        let at = format!("{p}.parquet.columns[{i}]");
        let name_ok = col
            .name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && col
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            c.add(
                format!("{at}.name"),
                format!(
                    "{:?}: a column name is lowercase letters, digits and _ (engines fold case)",
                    col.name
                ),
            );
        } else if RESERVED.contains(&col.name.as_str()) || col.name.starts_with("context_") {
            c.add(
                format!("{at}.name"),
                format!("{:?} is a column logferry writes itself", col.name),
            );
        } else if user.iter().any(|u| u.name == col.name) {
            c.add(
                format!("{at}.name"),
                format!("{:?} is named twice", col.name),
            );
        }
        if let Err(e) = crate::mask::rules::parse_path(&col.field) {
            c.add(format!("{at}.field"), e.to_string());
        } else if col.field.contains('[') {
            c.add(
                format!("{at}.field"),
                "a column takes a dotted path to one value, without [ ]",
            );
        }
        let Some(ty) = ColType::parse(&col.ty) else {
            c.add(
                format!("{at}.type"),
                format!(
                    "unknown type {:?}: string, int64, float64, bool or timestamp",
                    col.ty
                ),
            );
            continue;
        };
        user.push(Column {
            name: col.name.clone(),
            field: col.field.clone(),
            ty,
        });
    }
    let key_fields: Vec<String> = key.map(|k| k.fields().to_vec()).unwrap_or_default();
    let spec = Spec::new(codec, level, schema, &key_fields, user);
    (Compression::None, Some(Arc::new(spec)))
}
