//! The per-record hot path, one stage at a time: decode (validate + pass through), decode with
//! key field extraction, and block compression.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry::config::Format;
use logferry::decode::Decoder;
use logferry::encode::compress;
use logferry_sink::Compression;

fn lines() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..2000 {
        out.extend_from_slice(format!(
            r#"{{"ts":"2026-11-23T10:00:{:02}Z","job_id":"job-{i}","account_id":"acct-{}","lines":[{{"step":0,"input":{{"orderId":"ORD-{i}","items":3}},"output":{{"status":"ok"}}}},{{"step":1,"input":{{"note":"batch {i}"}},"output":{{"rows":12}}}}],"context":{{"user_id":"u{}","region":"eu-west-1"}}}}"#,
            i % 60, i % 7, i % 13
        ).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The DESIGN.md reference workload, from the same generator `scripts/bench.sh` uses.
fn workload() -> Vec<u8> {
    let path = std::env::temp_dir().join("logferry-bench-workload-8.log");
    if !path.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["run", "--release", "--quiet", "--example", "workload", "--"])
            .arg(&path)
            .arg("8")
            .status()
            .expect("run the workload generator");
        assert!(st.success());
    }
    std::fs::read(&path).expect("read the workload")
}

/// All default detectors and two field rules, as in config.example.toml.
fn profile(rules: bool) -> std::sync::Arc<logferry::mask::Profile> {
    let text = format!(
        "[sources.s]\ninclude = [\"/nonexistent/*.log\"]\nsinks = [\"d\"]\nmasking = \"pii\"\n\
         [sinks.d]\ntype = \"directory\"\npath = \"/tmp/x\"\n{}",
        include_str!("mask-profile.toml")
    );
    let text = if rules {
        text.to_string()
    } else {
        text.split("[[masking")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let env = |k: &str| {
        (k == "LOGFERRY_BENCH_HMAC_KEY").then(|| "0123456789abcdef0123456789abcdef".to_string())
    };
    let cfg = logferry::config::load_str(std::path::Path::new("/tmp/bench.toml"), &text, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.masking["pii"].clone()
}

fn masking(c: &mut Criterion) {
    let data = workload();
    // Split once: the stage measured is masking, not line splitting (the tailer does that).
    let records: Vec<&[u8]> = data
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut g = c.benchmark_group("masking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("reference_workload_default_detectors_two_rules", |b| {
        let mut m = logferry::mask::Masker::new(profile(true), Vec::new());
        b.iter(|| {
            let mut changed = 0;
            for l in &records {
                changed += m.mask(l) as usize;
            }
            changed
        })
    });
    g.bench_function("reference_workload_default_detectors_only", |b| {
        let mut m = logferry::mask::Masker::new(profile(false), Vec::new());
        b.iter(|| {
            let mut changed = 0;
            for l in &records {
                changed += m.mask(l) as usize;
            }
            changed
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let data = lines();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("decode_passthrough", |b| {
        let mut d = Decoder::new(Format::Json, None, &[], None);
        b.iter(|| {
            let mut n = 0;
            for l in data.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                n += d.decode(l, None, (0, 0)).record.len();
            }
            n
        })
    });
    // The same extraction without, then with, the record time (RFC 3339 here; the audit
    // spelling below): the difference is what parsing times costs the decode stage.
    g.bench_function("decode_extract_key_fields_no_time", |b| {
        let fields = vec!["account_id".to_string(), "context.user_id".to_string()];
        let mut d = Decoder::new(Format::Json, None, &fields, None);
        b.iter(|| {
            let mut n = 0;
            for l in data.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                n += d.decode(l, None, (0, 0)).values.get(0).map_or(0, str::len);
            }
            n
        })
    });
    let audit: Vec<u8> = String::from_utf8_lossy(&data)
        .replace("T10:00:", " 10:00:")
        .replace("Z\",", " UTC\",")
        .into_bytes();
    g.bench_function("decode_extract_key_fields_audit_time", |b| {
        let fields = vec!["account_id".to_string(), "context.user_id".to_string()];
        let mut d = Decoder::new(Format::Json, None, &fields, Some("ts"));
        b.iter(|| {
            let mut n = 0;
            for l in audit.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                n += d.decode(l, None, (0, 0)).values.get(0).map_or(0, str::len);
            }
            n
        })
    });
    // The parser alone, over the same 2,000 values.
    let stamps: Vec<String> = (0..2000)
        .map(|i| format!("2026-11-23T10:{:02}:{:02}.123Z", i % 60, i % 59))
        .collect();
    g.bench_function("parse_time_rfc3339_2000", |b| {
        b.iter(|| {
            stamps
                .iter()
                .filter_map(|t| logferry::timefmt::parse_time(t))
                .count()
        })
    });
    // The platform's audit spelling, through the same parser.
    let audit_stamps: Vec<String> = (0..2000)
        .map(|i| format!("2026-11-23 10:{:02}:{:02} UTC", i % 60, i % 59))
        .collect();
    g.bench_function("parse_time_audit_2000", |b| {
        b.iter(|| {
            audit_stamps
                .iter()
                .filter_map(|t| logferry::timefmt::parse_time(t))
                .count()
        })
    });
    g.bench_function("decode_extract_key_fields", |b| {
        let fields = vec!["account_id".to_string(), "context.user_id".to_string()];
        let mut d = Decoder::new(Format::Json, None, &fields, Some("ts"));
        b.iter(|| {
            let mut n = 0;
            for l in data.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                n += d.decode(l, None, (0, 0)).values.get(0).map_or(0, str::len);
            }
            n
        })
    });
    g.bench_function("gzip6_block", |b| {
        b.iter(|| compress(Compression::Gzip, Some(6), &data))
    });
    g.bench_function("zstd3_block", |b| {
        b.iter(|| compress(Compression::Zstd, Some(3), &data))
    });
    // Object encryption (aws-lc-rs AES-256-GCM, 1 MiB segments) over the same bytes; it runs
    // on the compressed payload, so its share of a batch's cost is smaller still.
    let key = logferry_vault::crypt::DataKey::generate("acme", "2026-12-03T10").unwrap();
    g.bench_function("aes256gcm_segments", |b| {
        b.iter(|| {
            logferry_vault::crypt::encrypt(&key, "b", &data, logferry_vault::crypt::DEFAULT_SEGMENT)
                .unwrap()
                .len()
        })
    });
    // The other candidate, RustCrypto's aes-gcm (AES-NI and CLMUL detected at run time), over
    // the same bytes in the same 1 MiB segments.
    {
        use aes_gcm::aead::AeadInPlace;
        use aes_gcm::KeyInit;
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
        g.bench_function("aes256gcm_rustcrypto_segments", |b| {
            b.iter(|| {
                let mut total = 0;
                for (i, chunk) in data.chunks(1 << 20).enumerate() {
                    let mut buf = chunk.to_vec();
                    let mut n = [0u8; 12];
                    n[7..11].copy_from_slice(&(i as u32).to_be_bytes());
                    let tag = cipher
                        .encrypt_in_place_detached(
                            aes_gcm::Nonce::from_slice(&n),
                            b"header",
                            &mut buf,
                        )
                        .unwrap();
                    total += buf.len() + tag.len();
                }
                total
            })
        });
    }
    g.finish();
}

/// Azure Monitor shaping: TimeGenerated from a field, a rename, the 64 KiB field limit.
fn shaping(c: &mut Criterion) {
    let data = workload();
    let shape = logferry::shape::Shape {
        time_field: Some("ts".into()),
        field_map: vec![("account_id".into(), "AccountId".into())],
        max_field_bytes: 64 << 10,
        max_record_bytes: 1_000_000,
    };
    let now = chrono::Utc::now();
    let mut g = c.benchmark_group("shaping");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("azure_monitor_reference_workload", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut n = 0usize;
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                shape.apply(line, now, &mut out);
                n += out.len();
            }
            n
        })
    });
    g.finish();
}

/// One record holding a 1 MiB value: `repeat` repeated, as a JSON string.
fn adversarial(repeat: &str) -> Vec<u8> {
    let n = (1 << 20) / repeat.len();
    let mut v = br#"{"s":""#.to_vec();
    v.extend_from_slice(repeat.repeat(n).as_bytes());
    v.extend_from_slice(b"\"}");
    v
}

/// Inputs built to make detectors slow: each must stay linear (>= 50 MB/s per core).
fn masking_adversarial(c: &mut Criterion) {
    let nested = {
        // 100 levels of arrays (decode's own limit is 128), repeated to 1 MiB.
        let one = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let mut v = br#"{"a":["#.to_vec();
        let n = (1 << 20) / (one.len() + 1);
        v.extend_from_slice(vec![one; n].join(",").as_bytes());
        v.extend_from_slice(b"]}");
        v
    };
    let keys = {
        // One object with 1 MiB of e-mail keys: every key is replaced, all collide.
        let mut v = b"{".to_vec();
        let mut i = 0;
        while v.len() < 1 << 20 {
            v.extend_from_slice(format!("\"u{i}@x.io\":1,").as_bytes());
            i += 1;
        }
        v.extend_from_slice(b"\"end\":0}");
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("email_keys", keys),
        ("sevens_spaced", adversarial("7 ")),
        ("dates_spaced", adversarial("2026-01-01 ")),
        ("digits", adversarial("1234567890")),
        ("at_dot", adversarial("@.")),
        ("jwt_prefixes", adversarial("eyJ")),
        ("aws_prefixes", adversarial("AKIA")),
        ("card_groups", adversarial("4111 1111 1111 1111 ")),
        ("ipv6_colons", adversarial("1:")),
        ("bearer", adversarial("bearer ")),
        ("nested_arrays", nested),
    ];
    let mut g = c.benchmark_group("masking_adversarial");
    g.sample_size(10);
    for (name, rec) in &cases {
        g.throughput(Throughput::Bytes(rec.len() as u64));
        g.bench_function(*name, |b| {
            let mut m = logferry::mask::Masker::new(profile(true), Vec::new());
            b.iter(|| m.mask(rec))
        });
    }
    g.finish();
}

/// The gzip backend, chosen by this measurement (issue 36): zlib-rs (flate2) and libdeflate
/// (libdeflater) at levels 1, 6 and 9 over the reference workload cut in 1 MiB blocks, one
/// member each, as the encoder makes them. The ratio is printed once per pair (criterion has
/// no column for it). Then inflating one block each way: libdeflate's safe API needs a
/// member's size and end, which a payload of several members does not give.
fn gzip_backends(c: &mut Criterion) {
    use std::io::{Read, Write};
    let data = workload();
    let blocks: Vec<&[u8]> = data.chunks(logferry::encode::BLOCK_BYTES).collect();
    let zlib_rs = |level: u32, block: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(block).unwrap();
        e.finish().unwrap()
    };
    let libdeflate = |c: &mut libdeflater::Compressor, block: &[u8]| {
        let mut out = vec![0; c.gzip_compress_bound(block.len())];
        let n = c.gzip_compress(block, &mut out).unwrap();
        out.truncate(n);
        out
    };
    let mut g = c.benchmark_group("gzip_backends");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for level in [1u32, 6, 9] {
        let lvl = libdeflater::CompressionLvl::new(level as i32).unwrap();
        let mut ld = libdeflater::Compressor::new(lvl);
        let sizes = |f: &mut dyn FnMut(&[u8]) -> Vec<u8>| -> usize {
            blocks.iter().map(|b| f(b).len()).sum()
        };
        let z = sizes(&mut |b| zlib_rs(level, b));
        let l = sizes(&mut |b| libdeflate(&mut ld, b));
        eprintln!(
            "gzip level {level}: {} bytes in, zlib-rs {z} ({:.2}%), libdeflate {l} ({:.2}%)",
            data.len(),
            100.0 * z as f64 / data.len() as f64,
            100.0 * l as f64 / data.len() as f64
        );
        g.bench_function(format!("zlib_rs_level_{level}"), |b| {
            b.iter(|| {
                blocks
                    .iter()
                    .map(|blk| zlib_rs(level, blk).len())
                    .sum::<usize>()
            })
        });
        g.bench_function(format!("libdeflate_level_{level}"), |b| {
            b.iter(|| {
                blocks
                    .iter()
                    .map(|blk| libdeflate(&mut ld, blk).len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
    let block = blocks[0];
    let member = zlib_rs(6, block);
    let mut g = c.benchmark_group("gunzip_backends");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("zlib_rs_one_block", |b| {
        let mut out = Vec::with_capacity(block.len());
        b.iter(|| {
            out.clear();
            flate2::read::MultiGzDecoder::new(&member[..])
                .read_to_end(&mut out)
                .unwrap()
        })
    });
    g.bench_function("libdeflate_one_block", |b| {
        let mut d = libdeflater::Decompressor::new();
        let mut out = vec![0; block.len()];
        b.iter(|| d.gzip_decompress(&member, &mut out).unwrap())
    });
    g.finish();
}

/// The `otlp` sink's own work per batch, one core, over the reference workload (8 MiB of
/// records as one batch, as `scripts/bench.sh --otlp` configures the sink): building the
/// protobuf request with a map body and with a string body, against what any reading of the
/// same JSON costs (serde_json validating each record, nothing kept), and gzip level 6 of the
/// request against gzip of the NDJSON the `http` sink sends.
fn otlp_mapping(c: &mut Criterion) {
    use logferry::otlp::{
        map, Body, Level, Path, Protocol, Severity, Spec, DEFAULT_SEVERITY_FIELDS,
    };
    let data = workload();
    let mut r = logferry::whole::Records {
        values: Vec::with_capacity(data.len()),
        offsets: vec![0],
        times: Vec::new(),
        observed: Vec::new(),
        source: "bench".into(),
    };
    for l in data.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
        r.values.extend_from_slice(l);
        r.offsets.push(r.values.len() as i32);
        r.times.push(1_764_000_000_000_000_000);
        r.observed.push(1_764_000_000_000_000_000);
    }
    let spec = |body| Spec {
        protocol: Protocol::Protobuf,
        body,
        attributes: ["job_id", "flow", "context.user_id"]
            .map(Path::new)
            .to_vec(),
        resource: Vec::new(),
        resource_fields: vec![Path::new("account_id")],
        event_name: None,
        severity: Severity {
            fields: DEFAULT_SEVERITY_FIELDS.map(Path::new).to_vec(),
            map: Vec::new(),
            default: Level::Info,
        },
        host: "bench".into(),
        compression: Compression::None,
        level: None,
    };
    let (map_body, string_body) = (spec(Body::Map), spec(Body::String));
    let request = map::protobuf(&map_body, &r).unwrap();
    eprintln!(
        "otlp request: {} bytes for {} bytes of records ({:.2} times)",
        request.len(),
        r.values.len(),
        request.len() as f64 / r.values.len() as f64
    );
    let mut g = c.benchmark_group("otlp_mapping");
    g.throughput(Throughput::Bytes(r.values.len() as u64));
    g.sample_size(10);
    g.bench_function("serde_json_validate_only", |b| {
        b.iter(|| {
            r.offsets
                .windows(2)
                .filter(|w| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(
                        &r.values[w[0] as usize..w[1] as usize],
                    )
                    .is_ok()
                })
                .count()
        })
    });
    g.bench_function("protobuf_map_body", |b| {
        b.iter(|| map::protobuf(&map_body, &r).unwrap().len())
    });
    g.bench_function("protobuf_string_body", |b| {
        b.iter(|| map::protobuf(&string_body, &r).unwrap().len())
    });
    // The typed tree alone: each record read into an AnyValue and given back.
    g.bench_function("tree_only", |b| {
        let mut spare = logferry::otlp::spare::Spare::default();
        b.iter(|| {
            r.offsets
                .windows(2)
                .filter_map(|w| {
                    let v = logferry::otlp::value::parse_with(
                        &r.values[w[0] as usize..w[1] as usize],
                        &mut spare,
                    )
                    .ok()?;
                    spare.keep(v);
                    Some(())
                })
                .count()
        })
    });
    // prost alone: the official log records, already built, each written out as the sink
    // writes them (the floor of any mapping through the official types, besides the tree).
    let official = map::request(&map_body, &r).unwrap();
    g.bench_function("prost_encode_records_only", |b| {
        b.iter(|| {
            official
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .flat_map(|sl| &sl.log_records)
                .map(|lr| prost::Message::encode_to_vec(lr).len())
                .sum::<usize>()
        })
    });
    drop(official);
    // Compression of what each sink sends for the same records (level 6, 1 MiB blocks for
    // NDJSON as the http sink cuts them, the request whole as the otlp sink sends it).
    g.bench_function("gzip6_ndjson", |b| {
        b.iter(|| {
            data.chunks(1 << 20)
                .map(|blk| compress(Compression::Gzip, Some(6), blk).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("gzip6_otlp_request", |b| {
        b.iter(|| {
            compress(Compression::Gzip, Some(6), &request)
                .unwrap()
                .len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench,
    masking,
    masking_adversarial,
    shaping,
    gzip_backends,
    otlp_mapping
);
criterion_main!(benches);
