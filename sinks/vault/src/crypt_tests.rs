use super::*;

fn key() -> DataKey {
    DataKey::generate("acme", "2026-12-03T10").unwrap()
}

fn same(k: &DataKey) -> DataKey {
    DataKey {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        hour: k.hour.clone(),
        bytes: k.bytes.clone(),
    }
}

fn open(obj: &[u8], k: &DataKey) -> Result<Vec<u8>, CryptError> {
    let mut out = Vec::new();
    decrypt(&mut &obj[..], &mut out, |_| Ok(same(k)))?;
    Ok(out)
}

fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Where segment `i` starts in an object with segment size `seg`.
fn seg_at(obj: &[u8], seg: usize, i: usize) -> usize {
    let (_, aad) = Header::read(&mut &obj[..]).unwrap();
    aad.len() + i * (seg + TAG)
}

#[test]
fn round_trips_empty_short_exact_and_long_payloads() {
    let k = key();
    for n in [0, 1, 15, 16, 17, 64, 65, 1000] {
        let p = plaintext(n);
        let obj = encrypt(&k, "b1", &p, 16).unwrap();
        assert_eq!(open(&obj, &k).unwrap(), p, "length {n}");
    }
}

#[test]
fn the_header_names_key_tenant_hour_and_batch() {
    let k = key();
    let obj = encrypt(&k, "batch-7", b"x", 16).unwrap();
    let (h, _) = Header::read(&mut &obj[..]).unwrap();
    assert_eq!(
        (
            h.key_id.as_str(),
            h.tenant.as_str(),
            h.hour.as_str(),
            h.batch_id.as_str()
        ),
        (k.id.as_str(), "acme", "2026-12-03T10", "batch-7")
    );
}

#[test]
fn a_changed_byte_anywhere_is_refused() {
    let k = key();
    let obj = encrypt(&k, "b1", &plaintext(50), 16).unwrap();
    let (_, aad) = Header::read(&mut &obj[..]).unwrap();
    // Every byte after the magic, version and segment size (those give other errors).
    for at in 10..obj.len() {
        let mut bad = obj.clone();
        bad[at] ^= 0x01;
        let err = open(&bad, &k).unwrap_err();
        assert!(
            matches!(
                err,
                CryptError::Tampered(_)
                    | CryptError::Header(_)
                    | CryptError::WrongKey { .. }
                    | CryptError::Truncated(_)
            ),
            "byte {at} (header {}): {err:?}",
            aad.len()
        );
    }
}

#[test]
fn a_truncated_object_is_named_truncated() {
    let k = key();
    let obj = encrypt(&k, "b1", &plaintext(64), 16).unwrap();
    // Cut exactly after the second of four segments.
    let cut = seg_at(&obj, 16, 2);
    assert_eq!(open(&obj[..cut], &k), Err(CryptError::Truncated(1)));
    // Cut inside a segment: too short to be one, or a segment that does not authenticate.
    assert_eq!(open(&obj[..cut + 5], &k), Err(CryptError::Truncated(1)));
    assert_eq!(open(&obj[..cut + 20], &k), Err(CryptError::Tampered(2)));
}

#[test]
fn swapped_segments_are_refused() {
    let k = key();
    let obj = encrypt(&k, "b1", &plaintext(64), 16).unwrap();
    let (a, b) = (seg_at(&obj, 16, 0), seg_at(&obj, 16, 1));
    let mut bad = obj.clone();
    bad[a..b].copy_from_slice(&obj[b..b + (b - a)]);
    bad[b..b + (b - a)].copy_from_slice(&obj[a..b]);
    assert_eq!(open(&bad, &k), Err(CryptError::Tampered(0)));
}

#[test]
fn another_key_or_a_rewritten_header_is_refused() {
    let k = key();
    let obj = encrypt(&k, "b1", b"secret", 16).unwrap();
    let other = DataKey::generate("acme", "2026-12-03T10").unwrap();
    assert!(matches!(
        open(&obj, &other),
        Err(CryptError::WrongKey { .. })
    ));
    // The same key bytes but a header claiming another tenant: the AAD no longer matches.
    let mut h = Header::read(&mut &obj[..]).unwrap().0;
    h.tenant = "evil".into();
    let mut forged = h.to_bytes();
    forged.extend_from_slice(&obj[seg_at(&obj, 16, 0)..]);
    assert_eq!(open(&forged, &k), Err(CryptError::Tampered(0)));
}

#[test]
fn garbage_and_other_versions_get_their_own_errors() {
    let k = key();
    assert_eq!(open(b"\x1f\x8b\x08rest", &k), Err(CryptError::NotEncrypted));
    let mut obj = encrypt(&k, "b1", b"x", 16).unwrap();
    obj[5] = 9;
    assert_eq!(open(&obj, &k), Err(CryptError::Version(9)));
    let obj = encrypt(&k, "b1", b"x", 16).unwrap();
    let header = seg_at(&obj, 16, 0);
    assert!(matches!(
        open(&obj[..header], &k),
        Err(CryptError::Header(_))
    ));
    assert!(matches!(
        open(&obj[..header - 3], &k),
        Err(CryptError::Header(_))
    ));
}

#[test]
fn the_debug_form_holds_no_key_bytes() {
    let k = key();
    let shown = format!("{k:?}");
    assert!(!shown.contains(&hex::encode(&k.bytes[..])));
    assert!(shown.contains(&k.id));
}

#[test]
fn a_batch_sealed_again_with_the_same_bytes_is_the_same_object() {
    let k = key();
    let p = plaintext(100);
    let a = encrypt_batch(&k, "b1", &p, 16).unwrap();
    assert_eq!(a, encrypt_batch(&k, "b1", &p, 16).unwrap());
    assert_eq!(open(&a, &k).unwrap(), p);
}

/// The salt decides the object key; the nonces are counters under it. So two objects under
/// one data key share a (key, nonce) pair exactly when they share a salt.
#[test]
fn anything_that_changes_the_ciphertext_changes_the_object_key() {
    let k = key();
    let p = plaintext(100);
    let salt = |obj: &[u8]| Header::read(&mut &obj[..]).unwrap().0.salt;
    let base = encrypt_batch(&k, "b1", &p, 16).unwrap();
    let mut other = p.clone();
    other[99] ^= 1;
    let variants = [
        encrypt_batch(&k, "b1", &p, 32).unwrap(), // another segment size
        encrypt_batch(&k, "b1", &other, 16).unwrap(), // other bytes (compression, envelope)
        encrypt_batch(&k, "b1", &p[..50], 16).unwrap(), // a split
        encrypt_batch(&k, "b2", &p, 16).unwrap(), // another batch
        encrypt(&k, "b1", &p, 16).unwrap(),       // a random salt
    ];
    let mut salts = vec![salt(&base)];
    for v in &variants {
        assert!(!salts.contains(&salt(v)));
        salts.push(salt(v));
    }
    // The first segments of base and the segment-size variant hold the same plaintext bytes,
    // yet differ: under version 1 they were equal, and their XOR gave plaintext XOR plaintext.
    let at = seg_at(&base, 16, 0);
    assert_ne!(base[at..at + 16], variants[0][at..at + 16]);
}

#[test]
fn the_salt_does_not_reveal_the_plaintext_without_the_key() {
    // Someone who guesses the plaintext cannot confirm it from the salt: it is keyed.
    let (k1, k2) = (key(), key());
    let p = plaintext(10);
    let s1 = Header::read(&mut &encrypt_batch(&k1, "b1", &p, 16).unwrap()[..])
        .unwrap()
        .0
        .salt;
    let s2 = Header::read(&mut &encrypt_batch(&k2, "b1", &p, 16).unwrap()[..])
        .unwrap()
        .0
        .salt;
    assert_ne!(s1, s2);
}

#[test]
fn version_1_objects_are_still_read() {
    let k = key();
    let p = plaintext(40);
    let h = Header {
        version: VERSION_1,
        segment_size: 16,
        nonce_prefix: [7u8; PREFIX],
        salt: [0u8; SALT],
        key_id: k.id.clone(),
        tenant: k.tenant.clone(),
        hour: k.hour.clone(),
        batch_id: "b1".into(),
    };
    let aad = h.to_bytes();
    let aead = k.aead_v1().unwrap();
    let mut obj = aad.clone();
    let chunks: Vec<&[u8]> = p.chunks(16).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut seg = c.to_vec();
        let n = nonce(&[7u8; PREFIX], i as u64, i + 1 == chunks.len()).unwrap();
        aead.seal_in_place_append_tag(n, Aad::from(&aad[..]), &mut seg)
            .unwrap();
        obj.extend_from_slice(&seg);
    }
    assert_eq!(open(&obj, &k).unwrap(), p);
    let (back, _) = Header::read(&mut &obj[..]).unwrap();
    assert_eq!(back, h);
}

/// Seals `p` with a [`Sealer`], fed in pieces of the lengths in `pieces` (in turn).
fn sealed_in_pieces(k: &DataKey, p: &[u8], seg: u32, pieces: &[usize]) -> Vec<u8> {
    let mut s = Sealer::new(k, "spill-1", seg).unwrap();
    let mut obj = s.header().to_vec();
    let mut rest = p;
    let mut i = 0;
    while !rest.is_empty() {
        let take = pieces[i % pieces.len()].min(rest.len());
        s.write(&rest[..take], &mut obj).unwrap();
        rest = &rest[take..];
        i += 1;
    }
    // An empty write changes nothing.
    s.write(&[], &mut obj).unwrap();
    s.finish(&mut obj).unwrap();
    obj
}

#[test]
fn a_sealer_fed_in_uneven_pieces_writes_what_decrypt_reads() {
    let k = key();
    let seg = 16usize;
    let piecings: [&[usize]; 5] = [&[1], &[3, 7], &[16, 5, 1], &[17], &[1000]];
    for n in [0, 1, seg - 1, seg, seg + 1, 3 * seg] {
        let p = plaintext(n);
        for pieces in piecings {
            let obj = sealed_in_pieces(&k, &p, seg as u32, pieces);
            assert_eq!(open(&obj, &k).unwrap(), p, "length {n}, pieces {pieces:?}");
            let (h, aad) = Header::read(&mut &obj[..]).unwrap();
            assert_eq!(h.version, VERSION);
            assert_eq!(h.batch_id, "spill-1");
            assert_eq!(
                (h.tenant.as_str(), h.hour.as_str()),
                ("acme", "2026-12-03T10")
            );
            // As many segments as `encrypt` makes: at least one, a full last one at k * seg.
            let segments = n.div_ceil(seg).max(1);
            assert_eq!(obj.len(), aad.len() + n + segments * TAG, "length {n}");
            assert_eq!(
                obj.len(),
                encrypt(&k, "spill-1", &p, seg as u32).unwrap().len(),
                "length {n}"
            );
        }
    }
}

#[test]
fn a_sealed_stream_cut_at_a_segment_boundary_is_named_truncated() {
    let k = key();
    let p = plaintext(3 * 16);
    let obj = sealed_in_pieces(&k, &p, 16, &[5]);
    let cut = seg_at(&obj, 16, 2);
    assert_eq!(open(&obj[..cut], &k), Err(CryptError::Truncated(1)));
    // Two streams of the same bytes have salts of their own.
    let again = sealed_in_pieces(&k, &p, 16, &[5]);
    assert_ne!(obj, again);
    assert_eq!(open(&again, &k).unwrap(), p);
}

#[test]
fn a_sealer_refuses_what_encrypt_refuses() {
    let k = key();
    assert!(matches!(Sealer::new(&k, "b", 0), Err(CryptError::Seal(_))));
    assert!(matches!(
        Sealer::new(&k, &"x".repeat(MAX_FIELD + 1), 16),
        Err(CryptError::Seal(_))
    ));
}
