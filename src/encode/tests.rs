//! The encoder's tests: layouts, escaping, compression and the pool.

use super::*;

fn meta(layout: &Layout, head_len: u32, tail_len: u32) -> BatchMeta {
    let now = chrono::Utc::now();
    BatchMeta {
        id: "x".into(),
        source: "s".into(),
        sink: "k".into(),
        key: "k".into(),
        record_count: 0,
        first_time: now,
        last_time: now,
        sha256: String::new(),
        uncompressed_bytes: 0,
        encoding: layout.encoding,
        compression: Compression::Gzip,
        head_len,
        tail_len,
        sealed_at: None,
        tenant: None,
        key_id: None,
        spool_encrypted: false,
        chain: None,
    }
}

fn seal() -> Seal<'static> {
    Seal {
        id: "0190-b",
        records: 3,
        sealed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

#[test]
fn json_array_with_envelope_round_trips() {
    let l = Layout::new(Encoding::JsonArray, Some(("{\"logEntries\":", "}", false)));
    let recs: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":[1,2]}", b"{}"];
    let (p, h, t) = l.assemble(&seal(), &recs);
    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(v["logEntries"].as_array().unwrap().len(), 3);
    assert_eq!(l.records(&meta(&l, h, t), &p).unwrap(), recs);
}

#[test]
fn ndjson_round_trips() {
    let l = Layout::new(Encoding::Ndjson, None);
    let recs: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":2}"];
    let (p, h, t) = l.assemble(&seal(), &recs);
    assert_eq!(p, b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(l.records(&meta(&l, h, t), &p).unwrap(), recs);
}

#[test]
fn placeholders_are_filled_at_seal_and_records_can_be_one_string() {
    let l = Layout::new(
        Encoding::JsonArray,
        Some((
            "{\"batch\":\"{{batch_id}}\",\"n\":{{record_count}},\"at\":\"{{sealed_at}}\",\"logs\":",
            "}",
            true,
        )),
    );
    assert!(
        l.head_at_open("x").is_none(),
        "the count is known at seal only"
    );
    let recs: Vec<&[u8]> = vec![b"{\"msg\":\"a \\\"q\\\" b\"}", b"{\"t\":\"x\\ty\"}", b"{}"];
    let (p, h, t) = l.assemble(&seal(), &recs);
    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(v["batch"], "0190-b");
    assert_eq!(v["n"], 3);
    assert_eq!(v["at"], "2023-11-14T22:13:20.000Z");
    let lines: Vec<&str> = v["logs"].as_str().unwrap().split('\n').collect();
    assert_eq!(lines.len(), 3);
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["msg"], "a \"q\" b");
    assert_eq!(l.records(&meta(&l, h, t), &p).unwrap(), recs);
    // Only the id: the head is written when the batch opens.
    let l = Layout::new(Encoding::Ndjson, Some(("{{batch_id}} ", "", false)));
    assert_eq!(l.head_at_open("abc").unwrap(), b"abc ");
}

#[test]
fn string_records_read_back_without_a_json_parser_control_bytes_and_all() {
    let l = Layout::new(Encoding::Ndjson, Some(("{\"logs\":", "}", true)));
    let recs: Vec<&[u8]> = vec![
        b"{\"a\":\"\x01\x1f\\u00e9 \\\\ \\\" /\"}",
        "{\"é\":1}".as_bytes(),
    ];
    let (p, h, t) = l.assemble(&seal(), &recs);
    serde_json::from_slice::<serde_json::Value>(&p).unwrap();
    assert_eq!(l.records(&meta(&l, h, t), &p).unwrap(), recs);
    for bad in [
        &b"x\\q"[..],
        b"x\\u12",
        b"x\\u0g00",
        b"x\\u1234",
        b"x\\",
        b"x\\u00+f",
    ] {
        assert!(
            matches!(unescape(bad), Err(RecordsError::Escape(1))),
            "{bad:?}"
        );
    }
}

#[test]
fn concatenated_members_and_frames_decompress_whole() {
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut all = compress(c, None, b"first\n").unwrap();
        all.extend(compress(c, None, b"second\n").unwrap());
        assert_eq!(decompress(c, &all).unwrap(), b"first\nsecond\n", "{c:?}");
    }
}

#[test]
fn gzip_members_are_stable_and_read_by_gzip_and_python() {
    use std::io::Write;
    let data: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{{\"id\":{i},\"msg\":\"job step {}\"}}\n", i % 97).into_bytes())
        .collect();
    for level in [1, 6, 9] {
        let a = compress(Compression::Gzip, Some(level), &data).unwrap();
        let b = compress(Compression::Gzip, Some(level), &data).unwrap();
        assert_eq!(a, b, "the same bytes give the same member (level {level})");
        assert!(a.len() < data.len() / 4);
        // Two members back to back, as a batch of blocks is: one stream for every reader.
        let mut two = a.clone();
        two.extend(compress(Compression::Gzip, Some(level), b"tail\n").unwrap());
        let mut want = data.clone();
        want.extend_from_slice(b"tail\n");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.gz");
        std::fs::File::create(&f).unwrap().write_all(&two).unwrap();
        let gz = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&f)
            .output()
            .unwrap();
        assert!(gz.status.success());
        assert_eq!(gz.stdout, want, "gzip -d");
        let py = std::process::Command::new("python3")
            .args([
                "-c",
                "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())",
            ])
            .arg(&f)
            .output()
            .unwrap();
        assert!(py.status.success());
        assert_eq!(py.stdout, want, "Python's gzip");
    }
}

#[tokio::test]
async fn pool_compresses_off_the_caller() {
    let pool = CompressPool::new(2).unwrap();
    let rx = pool.submit(b"hello\n".repeat(1000), Compression::Gzip, None);
    let out = rx.await.unwrap().unwrap();
    assert_eq!(
        decompress(Compression::Gzip, &out.bytes).unwrap(),
        b"hello\n".repeat(1000)
    );
}
