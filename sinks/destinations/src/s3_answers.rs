//! How S3's answers and the SDK's errors become [`Outcome`]s: S3's error codes first, then the
//! common status table.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use logferry_sink::Outcome;

/// The HTTP status of a service's answer, if the error is one.
pub(crate) fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Maps an SDK error onto an outcome: transport trouble, throttling and 5xx retry; a request
/// S3 refuses for what it is (missing bucket, denied, invalid) is permanent.
pub(crate) fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    bucket: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Outcome {
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            let after = se
                .raw()
                .headers()
                .get("retry-after")
                .and_then(logferry_sink::retry_after);
            let reason = format!("S3 {status} {code}: {msg}");
            match (status, code.as_str()) {
                (429, _) | (_, "SlowDown") => Outcome::Throttled { after, reason },
                (
                    _,
                    "RequestTimeout"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "ExpiredToken"
                    | "RequestTimeTooSkewed",
                ) => Outcome::Retry { after, reason },
                (_, "EntityTooLarge") => Outcome::TooLarge { reason },
                (_, "NoSuchBucket") => Outcome::Rejected {
                    reason: format!(
                        "{reason} (bucket {bucket:?} does not exist or is in another account)"
                    ),
                },
                (_, "AccessDenied") => Outcome::Rejected {
                    reason: format!(
                        "{reason} (grant s3:PutObject on arn:aws:s3:::{bucket}/* to this identity)"
                    ),
                },
                _ => logferry_sink::response::from_status(status, after, reason),
            }
        }
        SdkError::TimeoutError(_) => Outcome::Retry {
            after: None,
            reason: "S3 request timed out".into(),
        },
        SdkError::DispatchFailure(d) => Outcome::Retry {
            after: None,
            reason: format!(
                "cannot reach S3: {}",
                crate::tls::explain_chain(
                    &d.as_connector_error().map_or_else(
                        || format!("{e}"),
                        |c| logferry_sink::response::error_chain(c)
                    ),
                    false
                )
            ),
        },
        // Includes responses that could not be read: the object may or may not be there;
        // sending the same bytes to the same key again is safe.
        _ => Outcome::Retry {
            after: None,
            reason: format!("S3 request failed: {e}"),
        },
    }
}
