//! The per-record hot path, one stage at a time: decode (validate + pass through), decode with
//! key field extraction, and block compression.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry::config::Format;
use logferry::decode::Decoder;
use logferry::encode::compress;
use logferry_sinks::Compression;

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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
