use super::*;
use crate::ledger::{LocalKek, FORMAT};
use logferry_destinations::dir_store::DirectoryStore;

const H: &str = "2026-12-03T10";

fn ring(root: &std::path::Path) -> KeyRing {
    let kek = LocalKek::from_material("main", &[9u8; 32]).unwrap();
    KeyRing::new(Arc::new(DirectoryStore::new(root)), Arc::new(kek), "")
}

/// A KEK like KMS or Key Vault for the ledger's purpose: anyone may wrap for it (here the
/// "wrap" is the key in clear), so its entries are only as good as their signature.
struct OpenKek;

#[async_trait::async_trait]
impl Kek for OpenKek {
    fn name(&self) -> &str {
        "open"
    }
    async fn new_key(&self, tenant: &str, hour: &str) -> Result<(DataKey, Entry), LedgerError> {
        let key = DataKey::generate(tenant, hour).unwrap();
        Ok((key.clone_for_test(), planted(&key)))
    }
    async fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError> {
        let bytes =
            hex::decode(&entry.wrapped).map_err(|_| LedgerError::Unwrap(entry.key_id.clone()))?;
        let mut k = DataKey::generate(&entry.tenant, &entry.hour).unwrap();
        k.id = entry.key_id.clone();
        k.bytes.copy_from_slice(&bytes);
        Ok(k)
    }
}

impl DataKey {
    fn clone_for_test(&self) -> DataKey {
        DataKey {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            hour: self.hour.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// The entry an attacker writes for `key`, whose bytes they chose.
fn planted(key: &DataKey) -> Entry {
    Entry {
        format: FORMAT.into(),
        key_id: key.id.clone(),
        tenant: key.tenant.clone(),
        hour: key.hour.clone(),
        kek: "open".into(),
        provider: "open".into(),
        wrapped: hex::encode(&key.bytes[..]),
        kek_version: None,
        bind: None,
        signature: None,
        signed_by: None,
    }
}

fn signer() -> Arc<SigningKey> {
    let (private, _) = SigningKey::generate().unwrap();
    Arc::new(SigningKey::from_pem(&private).unwrap())
}

fn open_ring(root: &std::path::Path, key: Option<Arc<SigningKey>>) -> KeyRing {
    KeyRing::new(Arc::new(DirectoryStore::new(root)), Arc::new(OpenKek), "")
        .with_auth(EntryAuth::signing(key))
}

async fn plant(root: &std::path::Path, entry: &Entry) -> String {
    let path = entry_key(&entry.tenant, &entry.hour, &entry.key_id);
    let store = DirectoryStore::new(root);
    assert!(store
        .put_new(&path, &serde_json::to_vec(entry).unwrap())
        .await
        .unwrap());
    path
}

#[tokio::test]
async fn deliveries_at_once_share_one_key_and_a_restart_finds_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = ring(dir.path());
    let keys = futures::future::join_all((0..8).map(|_| a.key_for("acme", H))).await;
    let first = keys[0].as_ref().unwrap().clone();
    assert!(keys.iter().all(|k| k.as_ref().unwrap().id == first.id));
    // Another process (a restart after a crash) takes the same key: a replayed batch is
    // sealed into the same bytes.
    let b = ring(dir.path());
    assert_eq!(b.key_for("acme", H).await.unwrap().id, first.id);
    let listed = a.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].forged.is_none(), "{listed:?}");
    assert_eq!(
        b.open("acme", H, &first.id).await.unwrap().bytes[..],
        first.bytes[..]
    );
}

#[tokio::test]
async fn shredding_removes_every_entry_of_exactly_the_hours_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (r, other) = (ring(dir.path()), ring(dir.path()));
    for (t, h) in [
        ("a", "2026-12-03T09"),
        ("a", "2026-12-03T10"),
        ("a", "2026-12-03T11"),
        ("b", "2026-12-03T10"),
    ] {
        r.key_for(t, h).await.unwrap();
    }
    // A second key of the hour (an older release, or two writers at once).
    let (second, entry) = LocalKek::from_material("main", &[9u8; 32])
        .unwrap()
        .new_key("a", "2026-12-03T10")
        .await
        .unwrap();
    assert!(DirectoryStore::new(dir.path())
        .put_new(
            &entry_key("a", "2026-12-03T10", &second.id),
            &serde_json::to_vec(&entry).unwrap(),
        )
        .await
        .unwrap());
    assert!(other.open("a", "2026-12-03T10", &second.id).await.is_ok());
    let gone = r
        .shred("a", "2026-12-03T10", "2026-12-03T11")
        .await
        .unwrap();
    let hours: Vec<&str> = gone.iter().map(|l| l.hour.as_str()).collect();
    assert_eq!(hours, ["2026-12-03T10", "2026-12-03T10", "2026-12-03T11"]);
    let left: Vec<(String, String)> = r
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.tenant, l.hour))
        .collect();
    assert_eq!(
        left,
        [
            ("a".into(), "2026-12-03T09".into()),
            ("b".into(), "2026-12-03T10".into())
        ]
    );
    assert!(matches!(
        r.open("a", "2026-12-03T10", &second.id).await,
        Err(LedgerError::Shredded { .. })
    ));
}

#[tokio::test]
async fn a_planted_entry_is_never_used_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = open_ring(dir.path(), Some(signer()));
    // The attacker's key, wrapped "for" the KEK as anyone allowed to encrypt with it can.
    let theirs = DataKey::generate("acme", H).unwrap();
    let path = plant(dir.path(), &planted(&theirs)).await;
    // Writing never takes it: a key of our own, signed.
    let ours = r.key_for("acme", H).await.unwrap();
    assert_ne!(ours.id, theirs.id);
    assert_ne!(ours.bytes[..], theirs.bytes[..]);
    // Reading an object that names it is refused, and so is an entry signed by another key.
    let err = r.open("acme", H, &theirs.id).await.unwrap_err();
    assert!(matches!(err, LedgerError::Forged { .. }), "{err:?}");
    let mut resigned = planted(&DataKey::generate("acme", H).unwrap());
    resigned.sign(&signer());
    plant(dir.path(), &resigned).await;
    let err = r.open("acme", H, &resigned.key_id).await.unwrap_err();
    assert!(err.to_string().contains("not the [signing] key's"), "{err}");
    // Listing names both as forged, ours as authentic.
    let listed = r.list(Some("acme")).await.unwrap();
    let forged: Vec<&str> = listed
        .iter()
        .filter(|l| l.forged.is_some())
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(forged.len(), 2, "{listed:?}");
    assert!(forged.contains(&path.as_str()));
    assert!(listed
        .iter()
        .any(|l| l.key_id == ours.id && l.forged.is_none()));
    assert!(r.forged_seen() >= 4);
    // Our own entry opens in another process with the same signing key's public half.
    assert_eq!(
        r.open("acme", H, &ours.id).await.unwrap().bytes[..],
        ours.bytes[..]
    );
}

#[tokio::test]
async fn a_remote_kek_without_a_signing_key_makes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_ring(dir.path(), None)
        .key_for("acme", H)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("[signing]"), "{err}");
}

#[tokio::test]
async fn a_squatted_or_garbage_entry_neither_blocks_writing_nor_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let r = ring(dir.path());
    // Garbage at the old single-entry name and in the hour's folder.
    let store = DirectoryStore::new(dir.path());
    store
        .put_new(&legacy_entry_key("acme", H), b"{}")
        .await
        .unwrap();
    store
        .put_new(&format!("_keys/acme/{H}/{}.key", "ab".repeat(16)), b"{}")
        .await
        .unwrap();
    let k = r.key_for("acme", H).await.unwrap();
    assert_eq!(r.open("acme", H, &k.id).await.unwrap().id, k.id);
    let listed = r.list(Some("acme")).await.unwrap();
    assert_eq!(
        listed.iter().filter(|l| l.forged.is_some()).count(),
        2,
        "{listed:?}"
    );
    // A header naming a path outside the ledger's shape is refused before any lookup.
    for (t, h, id) in [
        ("../x", H, "ab"),
        ("acme", "../../k", "ab"),
        ("acme", H, "../../kek"),
    ] {
        assert!(matches!(
            r.open(t, h, id).await,
            Err(LedgerError::Forged { .. })
        ));
    }
}

#[tokio::test]
async fn an_entry_from_before_keys_were_named_by_id_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let kek = LocalKek::from_material("main", &[9u8; 32]).unwrap();
    let key = DataKey::generate("acme", H).unwrap();
    let entry = kek.wrap(&key).unwrap();
    DirectoryStore::new(dir.path())
        .put_new(
            &legacy_entry_key("acme", H),
            &serde_json::to_vec(&entry).unwrap(),
        )
        .await
        .unwrap();
    let r = ring(dir.path());
    assert_eq!(
        r.open("acme", H, &key.id).await.unwrap().bytes[..],
        key.bytes[..]
    );
    let listed = r.list(None).await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].key_id.as_str()),
        (1, key.id.as_str())
    );
    assert!(listed[0].forged.is_none());
    assert_eq!(r.shred("acme", H, H).await.unwrap().len(), 1);
    assert!(r.list(None).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_key_shredded_while_in_use_is_dropped_within_the_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, shredder) = (ring(dir.path()), ring(dir.path()));
    let hour = hour_of(Utc::now());
    let first = writer.key_for("acme", &hour).await.unwrap();
    shredder.shred("acme", &hour, &hour).await.unwrap();
    // Within the recheck the cached key is still used; after it, a new one is made.
    tokio::time::advance(RECHECK / 2).await;
    assert_eq!(writer.key_for("acme", &hour).await.unwrap().id, first.id);
    tokio::time::advance(RECHECK).await;
    let second = writer.key_for("acme", &hour).await.unwrap();
    assert_ne!(second.id, first.id);
    // A key whose entry is still there is kept past the recheck.
    tokio::time::advance(RECHECK * 2).await;
    assert_eq!(writer.key_for("acme", &hour).await.unwrap().id, second.id);
    // Other bytes put at its entry's name (a squatter): the key is dropped at the recheck.
    let path = dir.path().join(entry_key("acme", &hour, &second.id));
    std::fs::write(&path, b"garbage").unwrap();
    tokio::time::advance(RECHECK * 2).await;
    let third = writer.key_for("acme", &hour).await.unwrap();
    assert_ne!(third.id, second.id);
    assert!(writer.forged_seen() >= 1);
}

#[tokio::test]
async fn a_giant_file_at_the_lowest_entry_name_does_not_stop_writing() {
    let dir = tempfile::tempdir().unwrap();
    let r = ring(dir.path());
    let big = dir.path().join(format!("_keys/acme/{H}/0.key"));
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let k = r.key_for("acme", H).await.unwrap();
    assert_ne!(k.id, "0");
    // And a shred's receipt never lists what a planted legacy entry calls its key id.
    DirectoryStore::new(dir.path())
        .put_new(
            &legacy_entry_key("acme", H),
            br#"{"format":"logferry-key-1","key_id":"ALL KEYS ERASED","tenant":"acme","hour":"2026-12-03T10","kek":"main","provider":"local","wrapped":""}"#,
        )
        .await
        .unwrap();
    let gone = r.shred("acme", H, H).await.unwrap();
    let ids: Vec<&str> = gone
        .iter()
        .filter(|l| l.forged.is_none())
        .map(|l| l.key_id.as_str())
        .collect();
    assert_eq!(ids, [k.id.as_str()]);
    assert!(gone.iter().all(|l| !l.key_id.contains("ERASED")));
}
