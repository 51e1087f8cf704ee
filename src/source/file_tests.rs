use super::*;
use std::io::Write;

fn collect(t: &mut Tailed, chunk: usize, max: usize) -> Vec<(String, Option<usize>, u64)> {
    let mut out = Vec::new();
    while t
        .read_lines(chunk, &Limit::cut(max), &mut Vec::new(), |l| {
            out.push((
                String::from_utf8_lossy(l.bytes).into_owned(),
                l.truncated_from(),
                l.offset,
            ))
        })
        .unwrap()
        > 0
    {}
    out
}

#[test]
fn a_file_s_own_state_is_a_few_hundred_bytes() {
    // Held for every matched file, open or not (10,000 files: a few MB, not a buffer each).
    let n = std::mem::size_of::<Tailed>();
    assert!(n <= 384, "{n} bytes");
}

#[test]
fn partial_last_line_waits_for_its_newline() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    std::fs::write(&p, "one\ntw").unwrap();
    let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
    assert_eq!(collect(&mut t, 3, 100), vec![("one".into(), None, 0)]);
    assert_eq!(t.consumed, 4);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"o\n")
        .unwrap();
    assert_eq!(collect(&mut t, 3, 100), vec![("two".into(), None, 4)]);
    assert_eq!(t.consumed, 8);
}

#[test]
fn long_line_is_truncated_and_the_file_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    let long = "x".repeat(5000);
    std::fs::write(&p, format!("a\n{long}\nb\n")).unwrap();
    let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
    let got = collect(&mut t, 700, 1000);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].0.len(), 1000);
    assert_eq!(got[1].1, Some(5000));
    assert_eq!(got[1].2, 2);
    assert_eq!(got[2], ("b".into(), None, 5003));
}

#[test]
fn files_keep_only_their_unfinished_line_between_rounds() {
    // Files larger than a chunk, and files much smaller (reads are sized to the file).
    for (chunk, lines_per_file) in [(64 * 1024, 10_000), (256 * 1024, 20)] {
        keep_only_the_unfinished_line(chunk, lines_per_file);
    }
}

fn keep_only_the_unfinished_line(chunk: usize, lines_per_file: usize) {
    let d = tempfile::tempdir().unwrap();
    let mut spare = Vec::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let p = d.path().join(format!("{i}.log"));
        // Whole lines and a last one still being written.
        let mut text = "{\"a\":1}\n".repeat(lines_per_file);
        text.push_str("{\"partial\":");
        std::fs::write(&p, text).unwrap();
        files.push(Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap());
    }
    let mut lines = 0;
    for t in &mut files {
        while t
            .read_lines(chunk, &Limit::cut(1 << 20), &mut spare, |_| lines += 1)
            .unwrap()
            > 0
        {}
    }
    assert_eq!(lines, 20 * lines_per_file);
    for t in &files {
        assert!(
            t.buf_capacity() < 64,
            "a file kept {} bytes",
            t.buf_capacity()
        );
    }
    assert!(spare.capacity() > KEEP, "the source keeps one buffer");
}

#[test]
fn truncation_restarts_from_zero() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    std::fs::write(&p, "first line\nsecond\n").unwrap();
    let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
    collect(&mut t, 64, 100);
    std::fs::write(&p, "new\n").unwrap();
    assert!(t.check_truncated().unwrap());
    assert_eq!(collect(&mut t, 64, 100), vec![("new".into(), None, 0)]);
}

#[test]
fn rewrite_in_place_longer_than_offset_is_detected_by_fingerprint() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    std::fs::write(&p, "aaa\n").unwrap();
    let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
    collect(&mut t, 64, 100);
    // copytruncate, then the writer quickly wrote more than we had read.
    std::fs::write(&p, "bbb\nccc\n").unwrap();
    assert!(t.check_truncated().unwrap());
    assert_eq!(collect(&mut t, 64, 100).len(), 2);
}

#[test]
fn a_same_length_rewrite_seen_before_the_end_was_confirmed_is_still_detected() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    std::fs::write(&p, "aaa\n").unwrap();
    let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
    // The last data was read, but no read has returned 0 yet: not known to be at the end.
    assert_eq!(
        t.read_lines(64, &Limit::cut(100), &mut Vec::new(), |_| {})
            .unwrap(),
        4
    );
    assert!(!t.at_eof);
    // copytruncate and a rewrite as long as what was read, before the next look.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&p, "bbb\n").unwrap();
    assert!(
        !t.check_truncated().unwrap(),
        "not at the end: no fingerprint yet"
    );
    assert_eq!(
        t.read_lines(64, &Limit::cut(100), &mut Vec::new(), |_| {})
            .unwrap(),
        0
    );
    assert!(t.at_eof);
    assert!(
        t.check_truncated().unwrap(),
        "the change is still noticed at the end"
    );
    assert_eq!(collect(&mut t, 64, 100), vec![("bbb".into(), None, 0)]);
}

#[test]
fn fingerprint_needs_a_whole_first_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    std::fs::write(&p, "no newline yet").unwrap();
    assert_eq!(fingerprint(&File::open(&p).unwrap()).unwrap(), None);
    std::fs::write(&p, "line\nmore").unwrap();
    let a = fingerprint(&File::open(&p).unwrap()).unwrap();
    std::fs::write(&p, "line\nother").unwrap();
    assert_eq!(a, fingerprint(&File::open(&p).unwrap()).unwrap());
}

mod long_line_tests {
    use super::*;
    use crate::source::long_line::SpillSeal;
    use logferry_vault::keys::KeyRing;
    use std::sync::Arc;
    use std::time::Duration;

    /// `dir/a.log` with a small record, one of about `pad` bytes, and a small one again.
    fn log_with_big_record(dir: &Path, pad: usize) -> (PathBuf, String) {
        let p = dir.join("a.log");
        let big = format!(
            r#"{{"account_id":7,"lines":[{{"password":"{}"}}],"status":"ok"}}"#,
            "s".repeat(pad)
        );
        std::fs::write(&p, format!("{{\"a\":1}}\n{big}\n{{\"b\":2}}\n")).unwrap();
        (p, big)
    }

    #[test]
    fn an_oversize_json_line_becomes_a_stand_in_and_can_be_spilled_whole() {
        let d = tempfile::tempdir().unwrap();
        let (p, big) = log_with_big_record(d.path(), 50_000);
        let spill = d.path().join("dl");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: None,
        };
        let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
        let mut got = Vec::new();
        while t
            .read_lines(1000, &limit, &mut Vec::new(), |l| {
                got.push((
                    String::from_utf8_lossy(l.bytes).into_owned(),
                    l.cut,
                    l.offset,
                ))
            })
            .unwrap()
            > 0
        {}
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&got[1].0).unwrap();
        assert_eq!(v["account_id"], 7);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["_logferry_oversize"]["bytes"], big.len());
        assert!(!got[1].0.contains("sss"));
        let Cut::Oversize {
            total,
            spilled: Some(Ok(path)),
        } = &got[1].1
        else {
            panic!("{:?}", got[1].1)
        };
        assert_eq!(*total, big.len());
        assert_eq!(std::fs::read_to_string(path).unwrap(), big);
        assert_eq!(got[1].2, 8);
        assert_eq!(got[2].0, r#"{"b":2}"#);
        assert_eq!(t.over_limit, 1);
        // The buffer that held the large line is given back.
        assert!(t.buf_capacity() <= 4 * 1000, "{}", t.buf_capacity());
    }

    /// A spool key ring in `dir` (a local KEK) and a runtime for the source thread to wait on.
    fn ring(dir: &Path) -> (tokio::runtime::Runtime, Arc<KeyRing>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let kek = logferry_vault::ledger::LocalKek::from_material("k", &[3u8; 32]).unwrap();
        let store = Arc::new(logferry_destinations::dir_store::DirectoryStore::new(dir));
        (rt, Arc::new(KeyRing::new(store, Arc::new(kek), "")))
    }

    /// Reads `p` to its end through `limit`: each line's text and what became of it.
    fn read_all(p: &Path, limit: &Limit) -> Vec<(String, Cut)> {
        let mut t = Tailed::new(p, std::fs::File::open(p).unwrap(), true).unwrap();
        let mut got = Vec::new();
        while t
            .read_lines(1000, limit, &mut Vec::new(), |l| {
                got.push((String::from_utf8_lossy(l.bytes).into_owned(), l.cut))
            })
            .unwrap()
            > 0
        {}
        got
    }

    #[test]
    fn a_sealed_spill_holds_no_plaintext_and_decrypts_to_the_line() {
        let d = tempfile::tempdir().unwrap();
        // Larger than a segment of the sealed file, and not a multiple of one.
        let (p, big) = log_with_big_record(d.path(), 150_000);
        let (rt, keys) = ring(&d.path().join("spool-keys"));
        let spill = d.path().join("dl/sources/jobs");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: Some(SpillSeal {
                ring: keys.clone(),
                sink: "archive".into(),
                handle: rt.handle().clone(),
                timeout: Duration::from_secs(10),
            }),
        };
        let got = read_all(&p, &limit);
        assert_eq!(got.len(), 3);
        let Cut::Oversize {
            total,
            spilled: Some(Ok(path)),
        } = &got[1].1
        else {
            panic!("{:?}", got[1].1)
        };
        assert_eq!(*total, big.len());
        assert!(path.to_string_lossy().ends_with(".json.sealed"), "{path:?}");
        // Nothing under the folder shows the line.
        for e in std::fs::read_dir(&spill).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            assert!(!bytes.windows(16).any(|w| w == [b's'; 16]));
            assert!(!bytes.windows(8).any(|w| w == b"password"));
        }
        // The spool's format: the magic line, the metadata line, the object.
        let bytes = std::fs::read(path).unwrap();
        let rest = bytes.strip_prefix(b"LFSPOOL1\n".as_slice()).unwrap();
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&rest[..nl]).unwrap();
        assert_eq!(meta["sealed_with_sink"], "archive");
        assert_eq!(meta["compression"], "none");
        assert_eq!(meta["source"], "jobs");
        let object = &rest[nl + 1..];
        let (h, _) = logferry_vault::crypt::Header::read(&mut &object[..]).unwrap();
        assert_eq!(h.tenant, "_spool");
        assert_eq!(meta["id"], h.batch_id.as_str());
        let key = rt
            .block_on(keys.open(&h.tenant, &h.hour, &h.key_id))
            .unwrap();
        let mut plain = Vec::new();
        logferry_vault::crypt::decrypt(&mut &object[..], &mut plain, |_| Ok(key)).unwrap();
        assert_eq!(plain, big.as_bytes());
        assert_eq!(got[2].0, r#"{"b":2}"#);
    }

    #[test]
    fn without_its_key_a_spill_writes_nothing_and_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let big = format!(r#"{{"k":1,"secret":"{}"}}"#, "s".repeat(20_000));
        std::fs::write(&p, format!("{big}\n")).unwrap();
        // The key ring's folder cannot be made: its parent is a file.
        std::fs::write(d.path().join("blocked"), b"a file").unwrap();
        let (rt, keys) = ring(&d.path().join("blocked/spool-keys"));
        let spill = d.path().join("dl");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: Some(SpillSeal {
                ring: keys,
                sink: "archive".into(),
                handle: rt.handle().clone(),
                timeout: Duration::from_secs(10),
            }),
        };
        let got = read_all(&p, &limit);
        assert_eq!(got.len(), 1);
        assert!(
            matches!(
                &got[0].1,
                Cut::Oversize {
                    spilled: Some(Err(_)),
                    ..
                }
            ),
            "{:?}",
            got[0].1
        );
        // The stand-in goes instead; nothing is on disk.
        assert!(!got[0].0.contains("sss"));
        assert!(!spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none());
    }
}
