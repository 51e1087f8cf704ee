//! Value types of the configuration: sizes, durations, `${VAR}` expansion and secret files.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The largest size any setting takes: a larger one is a typo, and would overflow sums later.
pub const MAX_SIZE: u64 = 1 << 40;
/// The longest duration any setting takes (30 days): a longer one is a typo, and deadlines
/// computed from it would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a size string is refused (`input` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {input:?}: expected a number and a unit such as \"8MiB\"")]
    NotANumber { input: String },
    #[error("invalid size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, KB, MB or GB)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid size {input:?}: out of range")]
    OutOfRange { input: String },
    #[error("invalid size {input:?}: larger than 1TiB, the most any size setting takes")]
    TooLarge { input: String },
}

/// A byte size written as a string: `"8MiB"`, `"512 KiB"`, `"1GB"`, `"4096"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Result<Size, SizeError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let n: f64 = num.parse().map_err(|_| SizeError::NotANumber {
            input: s.to_string(),
        })?;
        let mult: u64 = match unit {
            "" | "B" | "b" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" | "m" => 1 << 20,
            "GiB" | "G" | "g" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(SizeError::UnknownUnit {
                    input: s.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 {
            return Err(SizeError::OutOfRange {
                input: s.to_string(),
            });
        }
        if v > MAX_SIZE as f64 {
            return Err(SizeError::TooLarge {
                input: s.to_string(),
            });
        }
        Ok(Size(v as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

/// Why a duration string is refused (`input` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// `reason`: humantime's words.
    #[error("invalid duration {input:?}: {reason} (write e.g. \"30s\", \"5m\", \"250ms\")")]
    Unreadable { input: String, reason: String },
    #[error(
        "invalid duration {input:?}: longer than 30 days, the most any duration setting takes"
    )]
    TooLong { input: String },
}

/// A duration written as a string: `"30s"`, `"5m"`, `"250ms"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Dur, DurationError> {
        let d = humantime::parse_duration(s.trim()).map_err(|e| DurationError::Unreadable {
            input: s.to_string(),
            reason: e.to_string(),
        })?;
        if d > MAX_DURATION {
            return Err(DurationError::TooLong {
                input: s.to_string(),
            });
        }
        Ok(Dur(d))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

macro_rules! string_value {
    ($ty:ident, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        $ty::parse(s).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
string_value!(Size, "a size string such as \"8MiB\"");
string_value!(Dur, "a duration string such as \"30s\"");

/// Why `${VAR}` expansion failed. The value itself is never in it: it may hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unclosed \"${{\" (write $${{ for a literal ${{)")]
    Unclosed,
    /// `body`: what is between the braces.
    #[error("invalid variable name {name:?} in \"${{{body}}}\"")]
    BadName { name: String, body: String },
    #[error("environment variable {name} is not set (write ${{{name}:-default}} for a default)")]
    Unset { name: String },
}

/// Expands `${VAR}` and `${VAR:-default}` from `lookup`; `$${` is a literal `${`.
/// A variable that is unset and has no default is an error naming it.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !input.contains("${") {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body_start
            .find('}')
            // The value itself is not echoed: it may hold a secret.
            .ok_or(ExpandError::Unclosed)?;
        let body = &body_start[..end];
        let (name, default) = match body.find(":-") {
            Some(p) => (&body[..p], Some(&body[p + 2..])),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ExpandError::BadName {
                name: name.to_string(),
                body: body.to_string(),
            });
        }
        match (
            lookup(name).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ExpandError::Unset {
                    name: name.to_string(),
                })
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

// Secrets are read by the network sinks' options (`*_file`); the directory sink has none.
#[allow(dead_code)]
/// A secret: kept out of `Debug` and `Display` so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

#[allow(dead_code)]
impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret option could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set either {name} or {name}_file, not both")]
    Both { name: String },
    #[error("cannot read {name}_file {path:?}: {}", crate::private_fs::why(.error))]
    Unreadable {
        name: String,
        path: String,
        error: std::io::Error,
    },
}

#[allow(dead_code)]
/// Resolves a secret option given inline (`password`) or as a file (`password_file`, the way
/// Kubernetes mounts secrets). Exactly one may be set; trailing newlines of a file are dropped.
pub fn secret(
    name: &str,
    inline: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Secret>, SecretError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(SecretError::Both {
            name: name.to_string(),
        }),
        (Some(v), None) => Ok(Some(Secret(v.to_string()))),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some(Secret(s.trim_end_matches(['\r', '\n']).to_string())))
            .map_err(|error| SecretError::Unreadable {
                name: name.to_string(),
                path: path.to_string(),
                error,
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn sizes_with_binary_and_decimal_units() {
        assert_eq!(Size::parse("8MiB").unwrap().0, 8 << 20);
        assert_eq!(Size::parse("512 KiB").unwrap().0, 512 << 10);
        assert_eq!(Size::parse("1GB").unwrap().0, 1_000_000_000);
        assert_eq!(Size::parse("4096").unwrap().0, 4096);
        assert_eq!(Size::parse("1.5KiB").unwrap().0, 1536);
        assert!(Size::parse("8 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(Size::parse("MiB").is_err());
        assert_eq!(Size::parse("1TiB").unwrap().0, MAX_SIZE);
        assert!(Size::parse("2TiB")
            .unwrap_err()
            .to_string()
            .contains("larger than 1TiB"));
        assert!(Size::parse("1e30").is_err());
        assert_eq!(Size(8 << 20).to_string(), "8MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("30s").unwrap().0, Duration::from_secs(30));
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert!(Dur::parse("soon").is_err());
        assert_eq!(Dur::parse("30days").unwrap().0, MAX_DURATION);
        // Would overflow an Instant in the source thread (a panic before the bound existed).
        let e = Dur::parse("300000000000y").unwrap_err().to_string();
        assert!(e.contains("longer than 30 days"), "{e}");
        assert!(Dur::parse("31d").is_err());
    }

    #[test]
    fn expansion_with_defaults_and_escapes() {
        assert_eq!(expand("${HOME_DIR}/d", &env).unwrap(), "/home/x/d");
        assert_eq!(expand("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(
            expand("cost $5 $${HOME_DIR}", &env).unwrap(),
            "cost $5 ${HOME_DIR}"
        );
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .to_string()
            .contains("NOPE is not set"));
        assert!(expand("${bad name}", &env).is_err());
        assert!(expand("${OPEN", &env).is_err());
    }

    #[test]
    fn secrets_from_files_and_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = secret("password", None, p.to_str()).unwrap().unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(secret("password", Some("a"), Some("b")).is_err());
    }
}
