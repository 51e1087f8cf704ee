//! `logferry schema`: the table a query engine reads a parquet sink's archive with.

use anyhow::{anyhow, bail};
use logferry::config::{Config, SinkKind};
use logferry::parquet::ddl::{render, Dialect, Place};

pub fn print(cfg: &Config, sink: &str, dialect: &str) -> anyhow::Result<()> {
    let Some(sc) = cfg.sinks.iter().find(|s| s.name == sink) else {
        bail!("no sink {sink:?} in the configuration");
    };
    let Some(spec) = &sc.parquet else {
        bail!("sink {sink:?} does not write Parquet (encoding = \"parquet\")");
    };
    let d = Dialect::parse(dialect)
        .ok_or_else(|| anyhow!("unknown dialect {dialect:?}: athena, duckdb, spark or synapse"))?;
    let place = match &sc.kind {
        SinkKind::Directory { path } => Place::Directory(path.display().to_string()),
        SinkKind::S3(o) => Place::S3 {
            bucket: o.bucket.clone(),
        },
        SinkKind::AzureBlob(o) => Place::Blob {
            account: o.account.clone(),
            container: o.container.clone(),
        },
        _ => bail!("sink {sink:?} is not an object store"),
    };
    // An engine that cannot reach the store: said, not refused (a copy may be elsewhere).
    let reach = match (&place, d) {
        (Place::S3 { .. }, Dialect::Synapse) => {
            Some("Synapse and Fabric read Azure storage, not S3")
        }
        (Place::Blob { .. }, Dialect::Athena) => Some("Athena reads S3, not Azure Blob"),
        (Place::Directory(_), Dialect::Athena | Dialect::Synapse) => {
            Some("this engine reads cloud storage, not a local folder")
        }
        _ => None,
    };
    if let Some(why) = reach {
        println!("-- Note: {why}; point the statement at a copy the engine can reach.");
    }
    if sc.encryption.is_some() {
        println!(
            "-- This sink encrypts: its objects end in .parquet.lfenc and no engine reads them in"
        );
        println!(
            "-- place. Point the statement at the copies `logferry decrypt --out DIR` writes."
        );
    }
    print!("{}", render(d, &sc.name, spec, sc.key.as_str(), &place));
    Ok(())
}
