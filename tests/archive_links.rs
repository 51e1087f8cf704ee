//! The directory sink against someone who can write into the archive directory: links planted
//! there are refused and named, and nothing outside the archive is written or truncated.

mod common;

use std::os::unix::fs::symlink;

use common::*;

#[test]
fn links_planted_in_the_archive_are_never_written_through() {
    let lf = Lf::new(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\n",
    );
    let kek = "7e".repeat(32);
    std::fs::write(lf.path("kek.hex"), &kek).unwrap();
    let outside = lf.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(lf.path("archive/jobs")).unwrap();
    // The probe's and the temp files' old fixed names, pointing at the KEK; a tenant's folder
    // pointing outside the archive.
    symlink(lf.path("kek.hex"), lf.path("archive/.logferry-tmp.check")).unwrap();
    symlink(lf.path("kek.hex"), lf.path("archive/.logferry-check")).unwrap();
    symlink(&outside, lf.path("archive/jobs/acct1")).unwrap();
    write_lines(&lf.path("logs/a.log"), 0, 300);
    let out = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    // A batch was set aside: the run says it did not finish.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(std::fs::read_to_string(lf.path("kek.hex")).unwrap(), kek);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing lands outside the archive"
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert!(err.contains("archive/jobs/acct1"), "{err}");
    // acct0's and acct2's records are delivered; acct1's batch is set aside, counted.
    for t in ["acct0", "acct2"] {
        let delivered = walk(&lf.path(&format!("archive/jobs/{t}")));
        assert_eq!(delivered.len(), 1, "{delivered:?}");
    }
    let dead: Vec<_> = walk(&lf.path("data/dead-letter/archive"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".batch"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
}
