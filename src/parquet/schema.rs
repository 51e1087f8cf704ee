//! The columns of a Parquet archive: three always (`_time`, `_source`, `record`), then the
//! typed columns of the sink's schema (a built-in one for the platform's job and audit records,
//! or the source's key fields) and the user's own, and for job records the scalar members of
//! `context` flattened as `context_<name>` strings.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

/// A typed column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    String,
    Int64,
    Float64,
    Bool,
    Timestamp,
}

impl ColType {
    pub fn parse(s: &str) -> Option<ColType> {
        Some(match s {
            "string" => ColType::String,
            "int64" => ColType::Int64,
            "float64" => ColType::Float64,
            "bool" => ColType::Bool,
            "timestamp" => ColType::Timestamp,
            _ => return None,
        })
    }

    fn arrow(self) -> DataType {
        match self {
            ColType::String => DataType::Utf8,
            ColType::Int64 => DataType::Int64,
            ColType::Float64 => DataType::Float64,
            ColType::Bool => DataType::Boolean,
            ColType::Timestamp => timestamp(),
        }
    }
}

/// `TIMESTAMP(MICROS)` adjusted to UTC: what Athena, Spark and DuckDB all read.
fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A typed column: `name` in the file, read from the dotted `field` of each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub field: String,
    pub ty: ColType,
}

impl Column {
    fn new(name: &str, field: &str, ty: ColType) -> Column {
        Column {
            name: name.into(),
            field: field.into(),
            ty,
        }
    }
}

/// The sink's `parquet.schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaName {
    /// The three columns and the source's key fields.
    #[default]
    Generic,
    PlatformJob,
    PlatformAudit,
}

impl SchemaName {
    pub fn parse(s: &str) -> Option<SchemaName> {
        Some(match s {
            "generic" => SchemaName::Generic,
            "platform_job" => SchemaName::PlatformJob,
            "platform_audit" => SchemaName::PlatformAudit,
            _ => return None,
        })
    }
}

/// The column codec (`compression` of a parquet sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Snappy,
    Gzip,
    None,
}

/// Names the always-present columns take; typed columns may not reuse them.
pub const RESERVED: [&str; 3] = ["_time", "_source", "record"];
/// The object whose scalar members `platform_job` flattens.
pub const SPREAD: &str = "context";

/// Everything the encoder needs for one sink.
#[derive(Debug, Clone)]
pub struct Spec {
    pub codec: Codec,
    pub level: Option<i32>,
    pub schema: SchemaName,
    /// The typed columns, built-in first, then the user's.
    pub columns: Vec<Column>,
    /// Flatten the scalar members of [`SPREAD`] (`platform_job`).
    pub spread: bool,
}

impl Spec {
    /// `key_fields`: the fields the sink's key template names (the generic schema's columns).
    pub fn new(
        codec: Codec,
        level: Option<i32>,
        schema: SchemaName,
        key_fields: &[String],
        user: Vec<Column>,
    ) -> Spec {
        let mut columns = builtin(schema, key_fields);
        columns.retain(|c| !user.iter().any(|u| u.name == c.name));
        columns.extend(user);
        Spec {
            codec,
            level,
            schema,
            columns,
            spread: schema == SchemaName::PlatformJob,
        }
    }

    /// The Arrow schema of a file whose flattened columns are `spread` (sorted names).
    pub fn arrow(&self, spread: &[String]) -> Arc<Schema> {
        let mut fields = vec![
            Field::new("_time", timestamp(), false),
            Field::new("_source", DataType::Utf8, false),
            Field::new("record", DataType::Utf8, false),
        ];
        fields.extend(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.arrow(), true)),
        );
        fields.extend(
            spread
                .iter()
                .map(|n| Field::new(format!("{SPREAD}_{n}"), DataType::Utf8, true)),
        );
        Arc::new(Schema::new(fields))
    }
}

/// The built-in typed columns of `schema`.
fn builtin(schema: SchemaName, key_fields: &[String]) -> Vec<Column> {
    use ColType::*;
    match schema {
        // Named as engines take them: lowercase, `_` for anything else (`a.b` gives `a_b`);
        // a field whose name comes out like an earlier one's is left to `record`.
        SchemaName::Generic => {
            let mut out: Vec<Column> = Vec::new();
            for f in key_fields {
                let n: std::string::String = f
                    .chars()
                    .map(|c| match c {
                        'a'..='z' | '0'..='9' | '_' => c,
                        'A'..='Z' => c.to_ascii_lowercase(),
                        _ => '_',
                    })
                    .collect();
                if n.is_empty() || RESERVED.contains(&n.as_str()) || out.iter().any(|c| c.name == n)
                {
                    continue;
                }
                out.push(Column::new(&n, f, String));
            }
            out
        }
        SchemaName::PlatformJob => vec![
            Column::new("id", "id", String),
            Column::new("master_job_id", "master_job_id", String),
            Column::new("calling_job_id", "calling_job_id", String),
            Column::new("recipe_id", "recipe_id", String),
            Column::new("account_id", "account_id", String),
            Column::new("status", "status", String),
            Column::new("is_test", "is_test", Bool),
            Column::new("started_at", "started_at", Timestamp),
            Column::new("completed_at", "completed_at", Timestamp),
            Column::new("error_type", "error_type", String),
            Column::new("environment_type", "environment_type", String),
        ],
        SchemaName::PlatformAudit => vec![
            Column::new("event_id", "event_id", String),
            Column::new("event", "event", String),
            Column::new("event_time", "ts", Timestamp),
            Column::new("actor", "actor", String),
            Column::new("account_id", "account_id", String),
            Column::new("source_ip", "source_ip", String),
            Column::new("outcome", "outcome", String),
            Column::new("resource", "detail.resource", String),
        ],
    }
}
