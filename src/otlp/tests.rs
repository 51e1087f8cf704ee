use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::*;
use crate::whole::Records;

fn spec() -> Spec {
    Spec {
        protocol: Protocol::Protobuf,
        body: Body::Map,
        attributes: vec![Path::new("job_id"), Path::new("context.user_email")],
        resource: vec![("deployment.environment".into(), "prod".into())],
        resource_fields: vec![Path::new("account_id")],
        event_name: Some(Path::new("event")),
        severity: Severity {
            fields: DEFAULT_SEVERITY_FIELDS
                .iter()
                .map(|f| Path::new(f))
                .collect(),
            map: vec![("denied".into(), Level::Error)],
            default: Level::Info,
        },
        host: "h1".into(),
        compression: Compression::None,
        level: None,
    }
}

pub(crate) fn records(lines: &[&str]) -> Records {
    let mut r = Records {
        values: Vec::new(),
        offsets: vec![0],
        times: Vec::new(),
        observed: Vec::new(),
        source: "jobs".into(),
    };
    for (i, l) in lines.iter().enumerate() {
        r.values.extend_from_slice(l.as_bytes());
        r.offsets.push(r.values.len() as i32);
        r.times.push(1_700_000_000_000_000_000 + i as i64);
        r.observed.push(1_800_000_000_000_000_000);
    }
    r
}

fn attr<'a>(
    kvs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    k: &str,
) -> Option<&'a Value> {
    kvs.iter()
        .find(|a| a.key == k)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

#[test]
fn records_map_to_the_logs_data_model() {
    let lines = [
        r#"{"ts":"x","job_id":"job-1","account_id":"acct-1","status":"failed","duration_ms":5,"context":{"user_email":"[REDACTED:email]"}}"#,
        r#"{"ts":"x","event":"secret.read","account_id":"acct-2","outcome":"denied"}"#,
        r#"{"job_id":"job-3","account_id":"acct-1","status":"Succeeded","ok":true,"f":1.5,"a":[1]}"#,
        "not json at all",
    ];
    let req = map::request(&spec(), &records(&lines)).unwrap();
    // Three resources: acct-1, acct-2, and the record without an account.
    assert_eq!(req.resource_logs.len(), 3);
    let acct1 = &req.resource_logs[0];
    let res = &acct1.resource.as_ref().unwrap().attributes;
    assert_eq!(
        attr(res, "account_id"),
        Some(&Value::StringValue("acct-1".into()))
    );
    assert_eq!(
        attr(res, "service.name"),
        Some(&Value::StringValue("jobs".into()))
    );
    assert_eq!(
        attr(res, "host.name"),
        Some(&Value::StringValue("h1".into()))
    );
    assert_eq!(
        attr(res, "deployment.environment"),
        Some(&Value::StringValue("prod".into()))
    );
    let scope = acct1.scope_logs[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "logferry");
    let recs = &acct1.scope_logs[0].log_records;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(recs[0].observed_time_unix_nano, 1_800_000_000_000_000_000);
    assert_eq!(
        (recs[0].severity_number, recs[0].severity_text.as_str()),
        (17, "ERROR")
    );
    assert_eq!(
        (recs[1].severity_number, recs[1].severity_text.as_str()),
        (9, "INFO")
    );
    assert_eq!(
        attr(&recs[0].attributes, "job_id"),
        Some(&Value::StringValue("job-1".into()))
    );
    assert_eq!(
        attr(&recs[0].attributes, "context.user_email"),
        Some(&Value::StringValue("[REDACTED:email]".into()))
    );
    assert!(attr(&recs[1].attributes, "context.user_email").is_none());
    let Some(Value::KvlistValue(body)) = recs[1].body.as_ref().and_then(|b| b.value.as_ref())
    else {
        panic!("body is a map");
    };
    assert_eq!(attr(&body.values, "ok"), Some(&Value::BoolValue(true)));
    assert_eq!(attr(&body.values, "f"), Some(&Value::DoubleValue(1.5)));
    let audit = &req.resource_logs[1].scope_logs[0].log_records[0];
    assert_eq!(audit.event_name, "secret.read");
    assert_eq!(
        audit.severity_text, "ERROR",
        "the sink's map before the built-in words"
    );
    let text = &req.resource_logs[2].scope_logs[0].log_records[0];
    assert_eq!(
        text.body.as_ref().unwrap().value,
        Some(Value::StringValue("not json at all".into()))
    );
    assert_eq!(text.severity_number, 9);
}

#[test]
fn a_string_body_is_the_record_text() {
    let mut s = spec();
    s.body = Body::String;
    let line = r#"{"job_id":"j","status":"failed"}"#;
    let req = map::request(&s, &records(&[line])).unwrap();
    let r = &req.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(
        r.body.as_ref().unwrap().value,
        Some(Value::StringValue(line.into()))
    );
    assert_eq!(r.severity_text, "ERROR");
}

#[test]
fn json_is_otlp_json() {
    let mut s = spec();
    s.protocol = Protocol::Json;
    let stage = Stage { spec: s };
    let r = records(&[r#"{"n":-7,"account_id":"a"}"#]);
    let block = stage.encode(r).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&block.bytes).unwrap();
    let rec = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(
        rec["timeUnixNano"], "1700000000000000000",
        "64-bit integers as strings"
    );
    assert_eq!(rec["severityNumber"], 9);
    assert_eq!(
        rec["body"]["kvlistValue"]["values"][0]["value"]["intValue"],
        "-7"
    );
    let p = block.payload.unwrap();
    assert_eq!(p.len, block.bytes.len() as u64);
}

#[test]
fn halves_keep_resources_with_their_records() {
    let lines = [
        r#"{"account_id":"a","i":0}"#,
        r#"{"account_id":"a","i":1}"#,
        r#"{"account_id":"b","i":2}"#,
        r#"{"account_id":"b","i":3}"#,
        r#"{"account_id":"c","i":4}"#,
    ];
    let req = map::request(&spec(), &records(&lines)).unwrap();
    let bytes = split::write(logferry_sink::Encoding::OtlpProtobuf, &req).unwrap();
    let back = split::read(logferry_sink::Encoding::OtlpProtobuf, &bytes).unwrap();
    assert_eq!(back, req);
    let (a, b) = split::halves(back, 3);
    assert_eq!((split::count(&a), split::count(&b)), (3, 2));
    assert_eq!((a.resource_logs.len(), b.resource_logs.len()), (2, 2));
    let acct = |r: &opentelemetry_proto::tonic::logs::v1::ResourceLogs| {
        attr(&r.resource.as_ref().unwrap().attributes, "account_id").cloned()
    };
    assert_eq!(
        acct(&a.resource_logs[1]),
        Some(Value::StringValue("b".into()))
    );
    assert_eq!(
        acct(&b.resource_logs[0]),
        Some(Value::StringValue("b".into()))
    );
    assert_eq!(b.resource_logs[0].scope_logs[0].log_records.len(), 1);
}

#[test]
fn levels_follow_the_data_model() {
    let n: Vec<i32> = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ]
    .iter()
    .map(|l| l.number())
    .collect();
    assert_eq!(n, [1, 5, 9, 13, 17, 21]);
    assert_eq!(Level::parse("warning"), Some(Level::Warn));
    assert_eq!(Level::parse("loud"), None);
}

#[test]
fn protobuf_is_the_official_request() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let lines = [
        r#"{"account_id":"a","job_id":"j1","status":"failed","lines":[{"x":{"y":[1,2.5,null,true]}}]}"#,
        r#"{"account_id":"b","event":"login","outcome":"success"}"#,
        r#"{"account_id":"a","context":{"user_email":"e"}}"#,
        "plain text",
    ];
    let r = records(&lines);
    let bytes = map::protobuf(&spec(), &r).unwrap();
    let official = map::request(&spec(), &r).unwrap();
    assert_eq!(bytes, official.encode_to_vec());
    assert_eq!(
        ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(),
        official
    );
}

#[test]
fn reused_memory_leaves_nothing_of_the_record_before() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    // The same places hold a map, a string, an array, a number and nothing in turn, with keys
    // and values shorter and longer than the record before's.
    let lines = [
        r#"{"job_id":"job-long-name-1","status":"failed","x":{"a":"aaaaaaaa","b":[1,2,3]},"tail":"t"}"#,
        r#"{"job_id":"j","x":"s","y":[{"k":"v"}]}"#,
        r#"{"x":[],"job_id":7}"#,
        "not json",
        r#"{"x":{"a":null},"context":{"user_email":"someone@example.com"}}"#,
        r#"{}"#,
        r#"{"job_id":"job-long-name-1","status":"failed","x":{"a":"aaaaaaaa","b":[1,2,3]},"tail":"t"}"#,
    ];
    for body in [Body::Map, Body::String] {
        let mut s = spec();
        s.resource_fields.clear();
        s.body = body;
        let bytes = map::protobuf(&s, &records(&lines)).unwrap();
        let req = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let got: Vec<_> = req.resource_logs[0].scope_logs[0].log_records.clone();
        assert_eq!(got.len(), lines.len());
        for (lr, line) in got.iter().zip(lines) {
            let want = match body {
                Body::Map => value::parse(line.as_bytes()).unwrap_or_else(|_| value::string(line)),
                Body::String => value::string(line),
            };
            assert_eq!(lr.body.as_ref(), Some(&want), "{line}");
            // Each record's own attributes only, as the record alone has them.
            let alone = map::request(&s, &records(&[line])).unwrap();
            let alone = &alone.resource_logs[0].scope_logs[0].log_records[0];
            assert_eq!(lr.attributes, alone.attributes, "{line}");
            assert_eq!(lr.severity_text, alone.severity_text, "{line}");
            assert_eq!(lr.event_name, alone.event_name, "{line}");
        }
        // The string body's attributes are the map body's.
        if body == Body::String {
            let mut m = s.clone();
            m.body = Body::Map;
            let with_map = map::request(&m, &records(&lines)).unwrap();
            let a = |r: &ExportLogsServiceRequest| {
                r.resource_logs[0].scope_logs[0]
                    .log_records
                    .iter()
                    .map(|l| {
                        (
                            l.attributes.clone(),
                            l.severity_number,
                            l.event_name.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(a(&req), a(&with_map));
        }
    }
}

/// Records that send the reading down its slow path (a value the fast reader refuses) beside
/// ones that do not, and a path deeper than the tree keeps structure.
fn odd_records() -> Vec<String> {
    let deep = |v: &str| format!("{}\"{v}\"{}", "{\"a\":".repeat(25), "}".repeat(25));
    vec![
        r#"{"i":1,"acct":48.386152126906524,"note":"truncated emoji \ud83d"}"#.into(),
        r#"{"i":2,"acct":48.38615212690653}"#.into(),
        r#"{"i":3,"acct":48.386152126906524}"#.into(),
        r#"{"i":4,"acct":18446744073709551617,"note":"\ud800"}"#.into(),
        r#"{"i":5,"acct":18446744073709551616}"#.into(),
        r#"{"i":6,"acct":-0,"x":1e400}"#.into(),
        r#"{"i":7,"acct":-0}"#.into(),
        r#"{"i":8,"acct":-9223372036854775809,"z":1e400}"#.into(),
        r#"{"i":9,"acct":-9223372036854775809}"#.into(),
        format!(r#"{{"i":10,"d":{}}}"#, deep("v1")),
        format!(r#"{{"i":11,"d":{},"x":1e400}}"#, deep("v2")),
    ]
}

#[test]
fn each_record_has_its_own_resource_and_both_bodies_read_values_alike() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let lines = odd_records();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let deep = format!("d{}", ".a".repeat(25));
    // (record i, its attributes, its resource's acct, its event name), in record order.
    let read = |body: Body| {
        let mut s = spec();
        s.body = body;
        s.attributes = vec![Path::new("i"), Path::new("acct"), Path::new(&deep)];
        s.resource_fields = vec![Path::new("acct"), Path::new(&deep)];
        s.event_name = Some(Path::new(&deep));
        let bytes = map::protobuf(&s, &records(&lines)).unwrap();
        let req = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let mut out = Vec::new();
        for rl in &req.resource_logs {
            let res = &rl.resource.as_ref().unwrap().attributes;
            for lr in &rl.scope_logs[0].log_records {
                out.push((
                    attr(&lr.attributes, "i").cloned(),
                    lr.attributes.clone(),
                    attr(res, "acct").cloned(),
                    attr(res, &deep).cloned(),
                    lr.event_name.clone(),
                ));
            }
        }
        out.sort_by_key(|r| format!("{:?}", r.0));
        out
    };
    let (map, string) = (read(Body::Map), read(Body::String));
    assert_eq!(map.len(), lines.len());
    assert_eq!(map, string, "the same values whatever the body");
    for (i, attrs, acct, deep_res, event) in &map {
        // A record's resource holds its own value, the one its attribute has.
        assert_eq!(acct.as_ref(), attr(attrs, "acct"), "record {i:?}");
        // Below the levels kept as structure, nothing is found (as in the body).
        assert_eq!(deep_res, &None, "record {i:?}");
        assert_eq!(event, "", "record {i:?}");
        assert_eq!(attr(attrs, &deep), None, "record {i:?}");
    }
    // A value is read alike whether or not another value of its record is refused.
    let acct = |i: i64| {
        map.iter()
            .find(|r| r.0 == Some(Value::IntValue(i)))
            .and_then(|r| r.2.clone())
    };
    assert_eq!(acct(1), acct(3));
    assert_eq!(acct(1), Some(Value::DoubleValue(48.386152126906524)));
    assert_eq!(acct(4), Some(Value::DoubleValue(18446744073709551617.0)));
    assert_eq!(acct(6), acct(7));
    assert!(matches!(acct(6), Some(Value::DoubleValue(z)) if z == 0.0 && z.is_sign_negative()));
    assert_eq!(acct(8), acct(9));
}

#[test]
fn a_record_value_equal_to_the_static_one_is_the_static_resource() {
    let mut s = spec();
    s.resource_fields = vec![Path::new("account_id"), Path::new("service.name")];
    let lines = [
        r#"{"account_id":"a","n":1}"#,
        r#"{"account_id":"a","n":2,"service":{"name":"jobs"}}"#,
        r#"{"account_id":"a","n":3,"service":{"name":"other"}}"#,
    ];
    for body in [Body::Map, Body::String] {
        s.body = body;
        let req = map::request(&s, &records(&lines)).unwrap();
        let names: Vec<(usize, Option<Value>)> = req
            .resource_logs
            .iter()
            .map(|rl| {
                (
                    rl.scope_logs[0].log_records.len(),
                    attr(&rl.resource.as_ref().unwrap().attributes, "service.name").cloned(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (2, Some(Value::StringValue("jobs".into()))),
                (1, Some(Value::StringValue("other".into())))
            ],
            "{body:?}"
        );
    }
}
