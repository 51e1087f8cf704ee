use super::*;

fn kinds(s: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    find(s, u16::MAX, &mut out);
    out.iter()
        .map(|f| (f.kind, s[f.start..f.end].to_string()))
        .collect()
}

#[test]
fn cards_need_luhn() {
    assert_eq!(
        kinds("card 4111 1111 1111 1111 ok"),
        vec![(Kind::CreditCard, "4111 1111 1111 1111".into())]
    );
    assert_eq!(
        kinds("4111-1111-1111-1111"),
        vec![(Kind::CreditCard, "4111-1111-1111-1111".into())]
    );
    assert!(kinds("order 4111111111111112").is_empty());
    assert_eq!(
        kinds("ref 2026-4111-1111-1111-1111")[0].1,
        "4111-1111-1111-1111"
    );
}

#[test]
fn iban_and_ssn_validation() {
    assert_eq!(
        kinds("pay GB82 WEST 1234 5698 7654 32 now")[0].0,
        Kind::Iban
    );
    assert!(kinds("GB82 WEST 1234 5698 7654 33")
        .iter()
        .all(|k| k.0 != Kind::Iban));
    assert_eq!(
        kinds("ssn 123-45-6789"),
        vec![(Kind::UsSsn, "123-45-6789".into())]
    );
    assert!(kinds("ssn 666-45-6789").is_empty());
    assert!(kinds("ssn 123-00-6789").is_empty());
    assert!(kinds("2026-11-23").is_empty());
}

#[test]
fn credentials_and_tokens() {
    assert_eq!(
        kinds("key AKIAIOSFODNN7EXAMPLE here")[0],
        (Kind::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE".into())
    );
    assert_eq!(
        kinds("Authorization: Bearer abc.def-123")[0],
        (Kind::BearerToken, "abc.def-123".into())
    );
    assert_eq!(
        kinds("postgres://app:s3cr3t@db:5432/x")[0],
        (Kind::UrlCredentials, "s3cr3t".into())
    );
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
    assert_eq!(kinds(jwt)[0].0, Kind::Jwt);
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----";
    assert_eq!(kinds(pem)[0], (Kind::PrivateKey, pem.into()));
    assert_eq!(
        kinds("-----BEGIN PRIVATE KEY-----\nMIIBtruncated")[0].0,
        Kind::PrivateKey
    );
}

#[test]
fn addresses_are_parsed_not_just_matched() {
    assert_eq!(kinds("from 10.1.2.3")[0], (Kind::Ipv4, "10.1.2.3".into()));
    assert!(kinds("v 999.1.2.3").is_empty());
    assert_eq!(
        kinds("from 2001:db8::1 x")[0],
        (Kind::Ipv6, "2001:db8::1".into())
    );
    assert!(kinds("at 10:00:00").is_empty());
    assert_eq!(
        kinds("mail a.b+c@example.co.uk")[0],
        (Kind::Email, "a.b+c@example.co.uk".into())
    );
}

#[test]
fn ids_and_timestamps_are_not_secrets() {
    for s in [
        "2026-11-23T10:00:00.123Z",
        "550e8400-e29b-41d4-a716-446655440000",
        "ORD-100042",
        "v1.2.3",
        "12.50 EUR",
        "d41d8cd98f00b204e9800998ecf8427e",
        "job-5000",
        // Card-shaped digits inside a hex id and inside a UUID's groups.
        "j-2a4212120637001",
        "12345678-4111-4111-8111-1003abcdef01",
    ] {
        let found: Vec<_> = kinds(s)
            .into_iter()
            .filter(|k| k.0 != Kind::Phone)
            .collect();
        assert!(found.is_empty(), "{s}: {found:?}");
    }
}
