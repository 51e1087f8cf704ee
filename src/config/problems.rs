//! What is wrong with a configuration file: every problem, collected while it is checked.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

/// All problems found in one file.
#[derive(Debug)]
pub struct Problems {
    pub file: PathBuf,
    pub list: Vec<Problem>,
    /// Credential values found before the problems, so that they are redacted when shown.
    pub secrets: Vec<String>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            self.list.len(),
            if self.list.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.list {
            let at = match p.line {
                Some(l) => format!("{}:{l}", self.file.display()),
                None => self.file.display().to_string(),
            };
            if p.path.is_empty() {
                writeln!(f, "  {at}: {}", p.message)?;
            } else {
                writeln!(f, "  {at}: {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

pub(super) struct Collector {
    pub(super) list: Vec<Problem>,
    /// Strings that `${VAR}` expansion produced, with how they were written.
    pub(super) expanded: Vec<(String, String)>,
    /// Those of them that may be secret (not a path, a name or a URL, whose secret parts are
    /// found by shape), for the process's redaction.
    pub(super) secret_expansions: Vec<String>,
}

impl Collector {
    /// `message` is words or a checker's typed error (shown by its `Display`).
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.list.push(Problem {
            line: None,
            path: path.into(),
            message: message.to_string(),
        });
    }
}
