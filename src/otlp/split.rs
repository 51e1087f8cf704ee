//! Halving an OTLP request that its destination refused for its size (413, or over
//! `max_request_bytes`): the records in their order, each half with the resources and scopes
//! of its own records.

use logferry_sink::Encoding;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not an OTLP protobuf request: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("not an OTLP/JSON request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an OTLP encoding")]
    Encoding,
}

/// Reads a request written in `encoding`.
pub fn read(encoding: Encoding, bytes: &[u8]) -> Result<ExportLogsServiceRequest, ReadError> {
    match encoding {
        Encoding::OtlpProtobuf => Ok(ExportLogsServiceRequest::decode(bytes)?),
        Encoding::OtlpJson => Ok(serde_json::from_slice(bytes)?),
        _ => Err(ReadError::Encoding),
    }
}

/// Writes a request in `encoding`.
pub fn write(encoding: Encoding, r: &ExportLogsServiceRequest) -> Result<Vec<u8>, ReadError> {
    match encoding {
        Encoding::OtlpProtobuf => Ok(r.encode_to_vec()),
        Encoding::OtlpJson => Ok(serde_json::to_vec(r)?),
        _ => Err(ReadError::Encoding),
    }
}

/// The number of log records in a request.
pub fn count(r: &ExportLogsServiceRequest) -> usize {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum()
}

/// The first `n` records and the rest, each as a request.
pub fn halves(
    r: ExportLogsServiceRequest,
    n: usize,
) -> (ExportLogsServiceRequest, ExportLogsServiceRequest) {
    let mut first = ExportLogsServiceRequest::default();
    let mut second = ExportLogsServiceRequest::default();
    let mut left = n;
    for rl in r.resource_logs {
        let ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        } = rl;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for sl in scope_logs {
            let ScopeLogs {
                scope,
                mut log_records,
                schema_url,
            } = sl;
            let take = left.min(log_records.len());
            left -= take;
            let rest = log_records.split_off(take);
            if !log_records.is_empty() {
                a.push(ScopeLogs {
                    scope: scope.clone(),
                    log_records,
                    schema_url: schema_url.clone(),
                });
            }
            if !rest.is_empty() {
                b.push(ScopeLogs {
                    scope,
                    log_records: rest,
                    schema_url,
                });
            }
        }
        if !a.is_empty() {
            first.resource_logs.push(ResourceLogs {
                resource: resource.clone(),
                scope_logs: a,
                schema_url: schema_url.clone(),
            });
        }
        if !b.is_empty() {
            second.resource_logs.push(ResourceLogs {
                resource,
                scope_logs: b,
                schema_url,
            });
        }
    }
    (first, second)
}
