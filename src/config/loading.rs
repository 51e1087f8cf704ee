//! Reading a configuration file: parsed, `${VAR}` expanded, checked, and its problems placed
//! on their lines with values from the environment never echoed.

use std::path::{Path, PathBuf};

use super::tables::join;
use super::{build, locate, secrets, values, Collector, Config, Problem, Problems};

/// Environment variables that hold credentials for the AWS and Azure SDKs.
const CREDENTIAL_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
];

/// Reads, expands and checks a configuration file with the process environment, and
/// registers the credentials it holds with the process's redaction.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        secrets: Vec::new(),
        file: path.to_path_buf(),
        list: vec![Problem {
            line: None,
            path: String::new(),
            // Who reads matters in a container (the file mounted root's, mode 0600).
            message: format!("cannot read the file: {}", crate::private_fs::why(&e)),
        }],
    })?;
    // Relative paths in the file are relative to the file's directory: make that absolute so
    // checkpoints and logs name files the same way whatever the working directory is.
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let res = load_str(&abs, &text, &|k| std::env::var(k).ok());
    // Credentials the SDK chains take from the environment.
    logferry_sink::redact::register(CREDENTIAL_VARS.iter().filter_map(|v| std::env::var(v).ok()));
    // The process's messages (logs, errors, /readyz) never show these from now on, also
    // when the file was refused.
    match &res {
        Ok(cfg) => logferry_sink::redact::register(&cfg.secrets),
        Err(p) => logferry_sink::redact::register(&p.secrets),
    }
    res
}

pub fn load_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    let fail = |list: Vec<Problem>| Problems {
        file: path.to_path_buf(),
        list,
        secrets: Vec::new(),
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| locate::line_of(text, s.start));
            return Err(fail(vec![Problem {
                line,
                path: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]));
        }
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(fail(vec![Problem {
                line: None,
                path: String::new(),
                message: format!("not valid TOML: {e}"),
            }]))
        }
    };
    let mut c = Collector {
        list: Vec::new(),
        expanded: Vec::new(),
        secret_expansions: Vec::new(),
    };
    expand_table(&mut table, "", env, &mut c);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let secrets::Found {
        values: mut found,
        mut files,
    } = secrets::collect(&table, &base, env);
    found.extend(c.secret_expansions.iter().cloned());
    files.push(path.to_path_buf());
    files.extend(
        secrets::ENV_FILES
            .iter()
            .filter_map(|v| env(v))
            .map(PathBuf::from),
    );
    if let Some(home) = env("HOME") {
        files.push(Path::new(&home).join(".aws/credentials"));
    }
    let cfg = build(path, table, env, &mut c);
    if c.list.is_empty() {
        if let Some(mut cfg) = cfg {
            cfg.secrets = found;
            cfg.credential_files = files;
            return Ok(cfg);
        }
    }
    // A value that came from the environment is never echoed (serde quotes the values it
    // refuses, and a `${TOKEN}` in the wrong place is a token): it is shown as it was written.
    c.expanded
        .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    for p in &mut c.list {
        p.line = locate::line_of_path(&doc, text, &p.path);
        for (value, written) in &c.expanded {
            if p.message.contains(value.as_str()) {
                p.message = p.message.replace(value.as_str(), written);
            }
        }
    }
    c.list.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let mut problems = fail(c.list);
    problems.secrets = found;
    Err(problems)
}

fn expand_table(
    t: &mut toml::Table,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) {
    for (k, v) in t.iter_mut() {
        let path = join(prefix, k);
        expand_value(v, &path, env, c);
    }
}

fn expand_value(
    v: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) {
    match v {
        toml::Value::String(s) => match values::expand(s, env) {
            Ok(e) => {
                // Short values ("5s", "gzip") could be any text in a message; a secret is not
                // that short.
                if e != *s && e.len() >= 6 {
                    c.expanded.push((e.clone(), s.clone()));
                    if !secrets::plain_option(path) {
                        c.secret_expansions.push(e.clone());
                    }
                }
                *s = e;
            }
            Err(m) => c.add(path, m),
        },
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, c);
            }
        }
        toml::Value::Table(t) => expand_table(t, path, env, c),
        _ => {}
    }
}
