//! The source side of a pipeline: for each configured source its decoder, masker, one
//! batcher per sink, and the thread that tails its files.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::warn;

use super::sinks::SinkSide;
use crate::batch::{Batcher, ChannelOutlet, Plan, ShapeStage};
use crate::config::{Buffer, Config, SinkKind};
use crate::decode::Decoder;
use crate::encode::{CompressPool, Layout};
use crate::mask::Masker;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::{Left, SourceCtx, Tailer};
use crate::whole::Whole;

/// A started source: its name and thread.
pub(super) type Started = (String, std::thread::JoinHandle<Left>);

#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    cfg: &Config,
    once: bool,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    shutdown: &Shutdown,
    sides: &HashMap<String, SinkSide>,
    spool_rings: &HashMap<String, Arc<logferry_vault::keys::KeyRing>>,
    pool: &CompressPool,
) -> anyhow::Result<Vec<Started>> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let handle = tokio::runtime::Handle::current();
    let mut sources = Vec::new();
    // Each source's share of what the descriptor limit leaves after the sinks' connections.
    let fd_room = crate::source::fds::per_source(
        cfg.sources.iter().map(|s| s.max_open_files as u64).sum(),
        cfg.sources.len() as u64,
        cfg.sinks.iter().map(|s| 2 * s.concurrency as u64).sum(),
    );
    for src in &cfg.sources {
        let mut fields: Vec<String> = Vec::new();
        for s in &src.sinks {
            let sc = &sides[s].cfg;
            let tenant = sc.encryption.as_ref().map(|e| &e.tenant_field);
            for f in sc.key.fields().iter().chain(tenant) {
                if !fields.contains(f) {
                    fields.push(f.clone());
                }
            }
        }
        let mut decoder = Decoder::new(
            src.format,
            src.record_id.as_deref(),
            &fields,
            src.timestamp_field.as_deref(),
        )
        .with_time_format(src.timestamp_format.as_deref());
        decoder.redact_unparsable = src
            .masking
            .as_ref()
            .and_then(|m| cfg.masking.get(m))
            .is_some_and(|p| p.redact_unparsable);
        let mut batchers = Vec::new();
        for s in &src.sinks {
            let side = &sides[s];
            let sc = &side.cfg;
            let tenant = sc.encryption.as_ref().map(|e| &e.tenant_field);
            let key_fields = sc.key.fields();
            let plan = Plan {
                sink: sc.name.clone(),
                key: sc.key.clone(),
                field_slots: key_fields
                    .iter()
                    .chain(tenant.filter(|t| !key_fields.contains(t)))
                    .map(|f| fields.iter().position(|x| x == f).unwrap_or(0))
                    .collect(),
                tenant: tenant.map(|t| {
                    key_fields
                        .iter()
                        .position(|f| f == t)
                        .unwrap_or(key_fields.len())
                }),
                // One data key per tenant and hour: no batch spans two hours.
                bucket_secs: match (sc.key.time_granularity(), tenant.is_some()) {
                    (Some(g), true) => Some(g.min(3600)),
                    (None, true) => Some(3600),
                    (g, false) => g,
                },
                layout: Layout::new(
                    sc.encoding,
                    sc.envelope
                        .as_ref()
                        .map(|(h, t, s)| (h.as_str(), t.as_str(), *s)),
                ),
                compression: sc.compression,
                level: sc.compression_level,
                max_bytes: sc.max_bytes,
                max_records: sc.max_records,
                max_age: sc.max_age,
                max_uncompressed: side.max_uncompressed,
                shape: sc.table_shape().map(|shape| {
                    let l = metrics.sink(&sc.name);
                    ShapeStage {
                        shape: Arc::new(shape.clone()),
                        truncated: metrics.fields_truncated.get_or_create(&l).clone(),
                        replaced: metrics.records_replaced.get_or_create(&l).clone(),
                    }
                }),
                whole: match (&sc.parquet, &sc.kind) {
                    (Some(spec), _) => Some(Whole::Parquet(Arc::new(crate::parquet::Stage::new(
                        (**spec).clone(),
                        metrics
                            .parquet_mistyped
                            .get_or_create(&metrics.sink(&sc.name))
                            .clone(),
                    )))),
                    (None, SinkKind::Otlp(o)) => Some(Whole::Otlp(Arc::new(crate::otlp::Stage {
                        spec: o.spec.clone(),
                    }))),
                    _ => None,
                },
            };
            let outlet = ChannelOutlet {
                tx: side.tx.clone(),
                handle: handle.clone(),
                shutdown: shutdown.clone(),
            };
            batchers.push(Batcher::new(
                plan,
                &src.name,
                &host,
                pool.clone(),
                outlet,
                side.ratio.clone(),
            ));
        }
        let ctx = SourceCtx {
            data_dir: cfg.data_dir.clone(),
            once,
            shutdown: shutdown.clone(),
            ckpt_interval: cfg.checkpoint_interval,
            health: health.clone(),
            zero_retention: src
                .sinks
                .iter()
                .any(|s| sides[s].cfg.buffer == Buffer::Memory),
            credentials: cfg.credential_files.clone(),
            private_dirs: cfg.private_dirs(),
            // The first of the source's sinks, in configuration order, whose spool is sealed.
            spill_seal: src.sinks.iter().find_map(|s| {
                spool_rings.get(s).map(|ring| crate::source::SpillSeal {
                    ring: ring.clone(),
                    sink: s.clone(),
                    handle: handle.clone(),
                    timeout: sides[s].cfg.timeout,
                })
            }),
        };
        let masker = match &src.masking {
            None => None,
            Some(name) => {
                // Validated at load; a miss here would be a bug, and must not ship unmasked.
                let Some(p) = cfg.masking.get(name) else {
                    bail!(
                        "source {}: masking profile {name:?} is not defined",
                        src.name
                    );
                };
                Some(Masker::new(p.clone(), metrics.masking(p)))
            }
        };
        let mut src = src.clone();
        if let Some(room) = fd_room {
            if src.max_open_files as u64 > room {
                warn!(source = %src.name, max_open_files = src.max_open_files, allowed = room,
                    "max_open_files is more than the process's descriptor limit (ulimit -n) leaves; lowered (files beyond it are read in turns)");
                src.max_open_files = room as usize;
            }
        }
        let name = src.name.clone();
        let tailer = Tailer::new(src, ctx, decoder, masker, batchers, metrics)?;
        let t = std::thread::Builder::new()
            .name(format!("source-{name}"))
            .spawn(move || tailer.run())
            .with_context(|| format!("cannot start source {name}"))?;
        sources.push((name, t));
    }
    Ok(sources)
}
