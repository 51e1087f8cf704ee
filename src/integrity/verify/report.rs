//! What `verify` found: its report, as JSON (the types) and as text.

use serde::Serialize;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub what: String,
}

#[derive(Debug, Serialize, Default)]
pub struct StreamSummary {
    pub stream: String,
    pub digests: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `running` (its newest digest is recent), `stopped` (closed by a stop) or `stale`.
    pub state: &'static str,
    /// The end of its newest digest.
    pub newest_to: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub clean: bool,
    pub digests: usize,
    pub objects_checked: usize,
    pub streams: Vec<StreamSummary>,
    pub problems: Vec<Problem>,
    /// Objects no digest lists yet, newer than the last digest (a running stream's hour).
    pub pending: Vec<String>,
    pub replayed_records: u64,
    pub replay_batches: u64,
    /// Objects whose replays were not counted (encrypted without the KEK at hand, or Parquet).
    pub replays_not_counted: usize,
    /// Judged as of a past time: digests written after it and objects modified after it were
    /// not there then, and are left out (how many).
    pub after_as_of: usize,
    /// Signed access receipts (`export`, `replay`): who read what.
    pub access: Vec<Access>,
}

/// One signed access receipt.
#[derive(Debug, Serialize)]
pub struct Access {
    pub key: String,
    pub action: String,
    pub by: String,
    pub at: String,
    pub from: String,
    pub to: String,
    pub records: u64,
    pub outcome: String,
}

impl Report {
    pub(super) fn problem(&mut self, kind: &'static str, what: String) {
        self.problems.push(Problem { kind, what });
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} digests, {} objects checked",
            self.digests, self.objects_checked
        );
        for st in &self.streams {
            let _ = writeln!(
                s,
                "stream {}: {} digests, seq {}..{}, from {} to {}, {} (newest digest ends {})",
                st.stream,
                st.digests,
                st.first_seq.map_or("-".into(), |v| v.to_string()),
                st.last_seq.map_or("-".into(), |v| v.to_string()),
                st.from.as_deref().unwrap_or("-"),
                st.to.as_deref().unwrap_or("-"),
                st.state,
                st.newest_to.as_deref().unwrap_or("-")
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM {}: {}", p.kind, p.what);
        }
        for a in &self.access {
            let _ = writeln!(
                s,
                "access: {} by {:?} at {}, records from {} to {}: {} records, {} ({})",
                a.action, a.by, a.at, a.from, a.to, a.records, a.outcome, a.key
            );
        }
        for p in &self.pending {
            let _ = writeln!(s, "pending (newer than the last digest): {p}");
        }
        let _ = writeln!(
            s,
            "replays: {} records sealed again in {} batches after a crash (not tampering)",
            self.replayed_records, self.replay_batches
        );
        if self.after_as_of > 0 {
            let _ = writeln!(
                s,
                "{} digests and objects written after the time judged at were left out",
                self.after_as_of
            );
        }
        if self.replays_not_counted > 0 {
            let _ = writeln!(
                s,
                "replays not counted in {} objects (encrypted without the KEK, or Parquet)",
                self.replays_not_counted
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if self.clean {
                "CLEAN".to_string()
            } else {
                format!("NOT CLEAN: {} problems", self.problems.len())
            }
        );
        s
    }
}
