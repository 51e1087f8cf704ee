//! The tables engines read a Parquet archive with, printed by `logferry schema` for the
//! configured sink: the columns of its [`Spec`], the Hive-style partitions of its key template
//! (`name=...` path segments), and where the files are.

use super::schema::{ColType, Spec};

/// The engine the statement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Athena,
    Duckdb,
    Spark,
    Synapse,
}

impl Dialect {
    pub fn parse(s: &str) -> Option<Dialect> {
        Some(match s {
            "athena" => Dialect::Athena,
            "duckdb" => Dialect::Duckdb,
            "spark" => Dialect::Spark,
            "synapse" => Dialect::Synapse,
            _ => return None,
        })
    }
}

/// Where a sink's objects are.
#[derive(Debug, Clone)]
pub enum Place {
    Directory(String),
    S3 { bucket: String },
    Blob { account: String, container: String },
}

/// A folder of the key template after its static prefix: a partition, or a literal folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folder {
    Partition(String),
    Literal(String),
}

/// A Hive-style partition of the key template: `name=` followed by a time part or a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    /// `%Y`, `%m`, `%d` or `%H` alone: (first, last, digits); anything else is injected.
    pub range: Option<(u32, u32, u32)>,
}

/// The template's static prefix (up to the first segment that varies), its partitions, and
/// whether a folder varies without being `name=value` (engines cannot name it).
pub fn layout(template: &str) -> (String, Vec<Partition>, bool) {
    let (prefix, parts, unnamed, _) = folders(template);
    (prefix, parts, unnamed)
}

/// As [`layout`], with the folders after the prefix in order (for a location template).
pub fn folders(template: &str) -> (String, Vec<Partition>, bool, Vec<Folder>) {
    let mut prefix = String::new();
    let mut varied = false;
    let mut parts = Vec::new();
    let mut unnamed = false;
    let mut folders = Vec::new();
    let segs: Vec<&str> = template.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().copied().enumerate() {
        let varies = seg.contains('{') || seg.contains('%');
        if !varied && !varies {
            prefix.push_str(seg);
            prefix.push('/');
            continue;
        }
        varied = true;
        let folder = i < last;
        let Some((name, value)) = seg.split_once('=') else {
            if folder {
                if varies {
                    unnamed = true;
                } else {
                    folders.push(Folder::Literal(seg.to_string()));
                }
            }
            continue;
        };
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            // Engines fold partition names to lowercase: `Year=` cannot be projected.
            unnamed |= folder;
            continue;
        }
        if folder {
            folders.push(Folder::Partition(name.to_string()));
        }
        let range = match value {
            "%Y" => Some((2000, 2099, 4)),
            "%m" => Some((1, 12, 2)),
            "%d" => Some((1, 31, 2)),
            "%H" => Some((0, 23, 2)),
            _ => None,
        };
        parts.push(Partition {
            name: name.to_string(),
            range,
        });
    }
    (prefix, parts, unnamed, folders)
}

fn sql_type(t: ColType, d: Dialect) -> &'static str {
    match (t, d) {
        (ColType::String, Dialect::Synapse) => "VARCHAR(MAX)",
        (ColType::String, _) => "string",
        (ColType::Int64, _) => "bigint",
        (ColType::Float64, Dialect::Synapse) => "float",
        (ColType::Float64, _) => "double",
        (ColType::Bool, Dialect::Synapse) => "bit",
        (ColType::Bool, _) => "boolean",
        (ColType::Timestamp, Dialect::Synapse) => "datetime2",
        (ColType::Timestamp, _) => "timestamp",
    }
}

/// The statement for `dialect`, naming the table `table`.
pub fn render(dialect: Dialect, table: &str, spec: &Spec, template: &str, place: &Place) -> String {
    let (prefix, parts, unnamed, folders) = folders(template);
    let mut cols = vec![
        ("_time".to_string(), ColType::Timestamp),
        ("_source".to_string(), ColType::String),
        ("record".to_string(), ColType::String),
    ];
    cols.extend(spec.columns.iter().map(|c| (c.name.clone(), c.ty)));
    let mut spread_note = String::new();
    if spec.spread {
        spread_note.push_str("-- Scalar members of `context` are columns `context_<name>` in the files that have them\n-- (add the ones you query: their type is string).\n");
    }
    if unnamed {
        spread_note.push_str("-- The key has folders that vary without being name=value: engines read them as\n-- plain folders, and partition projection cannot name them (write them as name={field}).\n");
    }
    let spread_note = spread_note.as_str();
    match dialect {
        Dialect::Athena => athena(table, &cols, &prefix, &parts, &folders, place, spread_note),
        Dialect::Duckdb => {
            let types: Vec<String> = parts
                .iter()
                .map(|p| {
                    let t = if p.range.is_some() {
                        "INTEGER"
                    } else {
                        "VARCHAR"
                    };
                    format!("'{}': {t}", p.name)
                })
                .collect();
            let hive = if types.is_empty() {
                String::new()
            } else {
                format!(",\n    hive_types = {{{}}}", types.join(", "))
            };
            format!(
                "-- DuckDB (for S3: INSTALL httpfs; for Azure: INSTALL azure)\n{spread_note}CREATE VIEW \"{table}\" AS\nSELECT * FROM read_parquet('{}**/*.parquet',\n    hive_partitioning = true, union_by_name = true{hive});\n",
                root(place, &prefix, Dialect::Duckdb)
            )
        }
        Dialect::Spark => {
            let cols: Vec<String> = cols.iter().map(|(n, _)| n.clone()).collect();
            let repair = if parts.is_empty() {
                String::new()
            } else {
                format!("-- Again when new partitions appear:\nMSCK REPAIR TABLE `{table}`;\n")
            };
            format!(
                "-- Spark SQL: the schema is read from the files ({}),\n-- the partitions from the name=value folders.\n{spread_note}CREATE TABLE `{table}`\nUSING PARQUET\nOPTIONS (mergeSchema 'true', pathGlobFilter '*.parquet')\nLOCATION '{}';\n{repair}",
                cols.join(", "),
                root(place, &prefix, Dialect::Spark)
            )
        }
        Dialect::Synapse => {
            let body: Vec<String> = cols
                .iter()
                .map(|(n, t)| format!("    [{n}] {}", sql_type(*t, dialect)))
                .collect();
            format!(
                "-- Synapse serverless SQL / Fabric\n{spread_note}SELECT TOP 100 r.*\nFROM OPENROWSET(\n    BULK '{}**',\n    FORMAT = 'PARQUET'\n) WITH (\n{}\n) AS r;\n",
                root(place, &prefix, Dialect::Synapse),
                body.join(",\n")
            )
        }
    }
}

/// The folder the engine reads, ending in `/`, as the inside of a SQL string literal.
fn root(place: &Place, prefix: &str, d: Dialect) -> String {
    root_text(place, prefix, d).replace('\'', "''")
}

fn root_text(place: &Place, prefix: &str, d: Dialect) -> String {
    match place {
        Place::Directory(p) => format!("{}/{prefix}", p.trim_end_matches('/')),
        Place::S3 { bucket } => {
            let scheme = if d == Dialect::Spark { "s3a" } else { "s3" };
            format!("{scheme}://{bucket}/{prefix}")
        }
        Place::Blob { account, container } => match d {
            Dialect::Spark => {
                format!("abfss://{container}@{account}.dfs.core.windows.net/{prefix}")
            }
            Dialect::Duckdb => format!("az://{container}/{prefix}"),
            _ => format!("https://{account}.blob.core.windows.net/{container}/{prefix}"),
        },
    }
}

fn athena(
    table: &str,
    cols: &[(String, ColType)],
    prefix: &str,
    parts: &[Partition],
    folders: &[Folder],
    place: &Place,
    spread_note: &str,
) -> String {
    let location = root(place, prefix, Dialect::Athena);
    let body: Vec<String> = cols
        .iter()
        .map(|(n, t)| format!("  `{n}` {}", sql_type(*t, Dialect::Athena)))
        .collect();
    let mut out = format!(
        "-- Amazon Athena, with partition projection (no crawler, no MSCK REPAIR)\n{spread_note}CREATE EXTERNAL TABLE IF NOT EXISTS `{table}` (\n{}\n)\n",
        body.join(",\n")
    );
    if !parts.is_empty() {
        let p: Vec<String> = parts
            .iter()
            .map(|p| {
                let t = if p.range.is_some() { "int" } else { "string" };
                format!("`{}` {t}", p.name)
            })
            .collect();
        out.push_str(&format!("PARTITIONED BY ({})\n", p.join(", ")));
    }
    out.push_str(&format!("STORED AS PARQUET\nLOCATION '{location}'\n"));
    if parts.is_empty() {
        out.push_str(";\n");
        return out;
    }
    let mut props = vec!["  'projection.enabled' = 'true'".to_string()];
    let mut template = location.clone();
    for f in folders {
        match f {
            Folder::Partition(n) => template.push_str(&format!("{n}=${{{n}}}/")),
            Folder::Literal(l) => template.push_str(&format!("{l}/")),
        }
    }
    for p in parts {
        match p.range {
            Some((lo, hi, digits)) => {
                props.push(format!("  'projection.{}.type' = 'integer'", p.name));
                props.push(format!("  'projection.{}.range' = '{lo},{hi}'", p.name));
                props.push(format!("  'projection.{}.digits' = '{digits}'", p.name));
            }
            None => props.push(format!("  'projection.{}.type' = 'injected'", p.name)),
        }
    }
    props.push(format!("  'storage.location.template' = '{template}'"));
    out.push_str(&format!("TBLPROPERTIES (\n{}\n);\n", props.join(",\n")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_segments_after_the_static_prefix_are_the_partitions() {
        let (prefix, parts, unnamed) = layout(
            "logs/jobs/tenant={account_id}/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet",
        );
        assert!(!unnamed);
        assert_eq!(prefix, "logs/jobs/");
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["tenant", "year", "month", "day", "hour"]);
        assert_eq!(parts[0].range, None);
        assert_eq!(parts[2].range, Some((1, 12, 2)));
        // Segments that are not name=value are not partitions.
        let (prefix, parts, unnamed) = layout("{source}/%Y/%m/{batch_id}.parquet");
        assert_eq!(prefix, "");
        assert!(parts.is_empty());
        assert!(unnamed);
        // A literal folder among the partitions stays in Athena's location template.
        let (_, _, unnamed, folders) = folders("jobs/tenant={a}/raw/year=%Y/{batch_id}.parquet");
        assert!(!unnamed);
        assert_eq!(
            folders,
            [
                Folder::Partition("tenant".into()),
                Folder::Literal("raw".into()),
                Folder::Partition("year".into())
            ]
        );
        // `Year=` cannot be a partition engines name: said, not silently dropped.
        assert!(layout("x/Year=%Y/{batch_id}.parquet").2);
    }
}
