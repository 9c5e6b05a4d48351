//! What is in the spool, for `siprec-gateway spool list`: one row per recording with its
//! state, identity, age and delivery progress, read from the files the gateway keeps
//! (`call.json`, `info.json`, `state.json`, `error.json`).
//!
//! Reading only: it is safe while the gateway runs (a recording that moves between two reads
//! is shown where it was found, or not at all). Rendering the table is pure and takes `now`.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::spool::{CALL_FILE, INFO_FILE, Spool, SpoolError};

/// Where a recording is in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryState {
    /// `active/`: the call is being recorded (or the gateway stopped during it and will
    /// recover it at its next start).
    Recording,
    /// `pending/`: finished, waiting for delivery.
    Pending,
    /// `failed/`: refused; `error.json` says why.
    Failed,
    /// `delivered/`: delivered and kept for `tethr.retention`.
    Delivered,
}

impl EntryState {
    /// The word shown in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Recording => "recording",
            EntryState::Pending => "pending",
            EntryState::Failed => "failed",
            EntryState::Delivered => "delivered",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            EntryState::Recording => "active",
            EntryState::Pending => "pending",
            EntryState::Failed => "failed",
            EntryState::Delivered => "delivered",
        }
    }
}

/// One recording in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub state: EntryState,
    /// The directory name.
    pub name: String,
    /// From `info.json`, or `call.json` while recording.
    pub session_id: Option<String>,
    /// When the call started (`info.json` startTime or `call.json`), else when its directory
    /// last changed.
    pub since: Option<SystemTime>,
    /// Delivery attempts so far (`state.json`).
    pub attempts: Option<u32>,
    /// Why the latest attempt failed (`state.json`), or why it was refused (`error.json`).
    pub last_error: Option<String>,
    /// When the next attempt is scheduled (`state.json`).
    pub next_attempt: Option<SystemTime>,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let t: jiff::Timestamp = text.parse().ok()?;
    let ms = u64::try_from(t.as_millisecond()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

impl Spool {
    /// Every recording in the spool: recording, pending, failed, then delivered, each oldest
    /// first.
    pub fn list(&self) -> Result<Vec<SpoolEntry>, SpoolError> {
        let mut out = Vec::new();
        for state in [EntryState::Recording, EntryState::Pending, EntryState::Failed, EntryState::Delivered] {
            for name in self.names_in(state.dir())? {
                out.push(self.entry(state, name));
            }
        }
        Ok(out)
    }

    fn entry(&self, state: EntryState, name: String) -> SpoolEntry {
        let dir = self.root().join(state.dir()).join(&name);
        let mut entry = SpoolEntry {
            state,
            session_id: None,
            since: None,
            attempts: None,
            last_error: None,
            next_attempt: None,
            name,
        };
        if state == EntryState::Recording {
            if let Some(call) = read_json(&dir.join(CALL_FILE)) {
                entry.session_id = call["session_id"].as_str().map(str::to_owned);
                entry.since = call["start_unix_ms"]
                    .as_u64()
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            }
        } else if let Some(info) = read_json(&dir.join(INFO_FILE)) {
            entry.session_id = info["sessionId"].as_str().map(str::to_owned);
            entry.since = info["startTime"].as_str().and_then(parse_time);
        }
        if entry.since.is_none() {
            entry.since = fs::metadata(&dir).and_then(|m| m.modified()).ok();
        }
        // The delivery state travels with the directory into failed/ and delivered/.
        let state_file = read_json(&dir.join(super::STATE_FILE))
            .and_then(|v| serde_json::from_value::<super::DeliveryState>(v).ok());
        if let Some(st) = state_file {
            entry.attempts = Some(st.attempts);
            entry.last_error = st.last_error;
            if state == EntryState::Pending {
                entry.next_attempt = st.next_attempt.as_deref().and_then(parse_time);
            }
        }
        if state == EntryState::Failed
            && let Some(failure) = self.read_failure(&entry.name)
        {
            entry.last_error = Some(failure.error);
        }
        entry
    }
}

/// `45s`, `12m05s`, `3h20m`, `2d04h`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Longest error text shown in the table (the full text is in `error.json` / `state.json`).
const ERROR_WIDTH: usize = 100;

/// The table `spool list` prints, with a totals line; `now` gives ages and "in 2m".
pub fn render_table(entries: &[SpoolEntry], now: SystemTime) -> String {
    let header = ["STATE", "NAME", "SESSION-ID", "AGE", "ATTEMPTS", "NEXT", "LAST ERROR"];
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            let age = e
                .since
                .map_or("-".into(), |t| short_duration(now.duration_since(t).unwrap_or_default()));
            let next = match e.next_attempt {
                Some(t) => match t.duration_since(now) {
                    Ok(d) if !d.is_zero() => format!("in {}", short_duration(d)),
                    _ => "due".into(),
                },
                None if e.state == EntryState::Pending => "queued".into(),
                None => "-".into(),
            };
            let mut error: String = e
                .last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if error.chars().count() > ERROR_WIDTH {
                error = error.chars().take(ERROR_WIDTH - 1).collect::<String>() + "…";
            }
            [
                e.state.as_str().into(),
                e.name.clone(),
                e.session_id.clone().unwrap_or_else(|| "-".into()),
                age,
                e.attempts.map_or("-".into(), |a| a.to_string()),
                next,
                error,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    push_row(&header);
    for row in &rows {
        push_row(&row.each_ref().map(String::as_str));
    }
    let count = |s: EntryState| entries.iter().filter(|e| e.state == s).count();
    out.push_str(&format!(
        "{} recording, {} pending, {} failed, {} delivered\n",
        count(EntryState::Recording),
        count(EntryState::Pending),
        count(EntryState::Failed),
        count(EntryState::Delivered)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align_and_say_when_and_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let entries = [
            SpoolEntry {
                state: EntryState::Pending,
                name: "a".into(),
                session_id: Some("a@sbc".into()),
                since: Some(now - Duration::from_secs(3725)),
                attempts: Some(3),
                last_error: Some("HTTP 503\nbusy".into()),
                next_attempt: Some(now + Duration::from_secs(90)),
            },
            SpoolEntry {
                state: EntryState::Failed,
                name: "long-name-b".into(),
                session_id: None,
                since: Some(now - Duration::from_secs(200_000)),
                attempts: None,
                last_error: Some("x".repeat(150)),
                next_attempt: None,
            },
        ];
        let table = render_table(&entries, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].find("NAME"), lines[1].find("a "));
        assert_eq!(lines[0].find("AGE"), lines[2].find("2d07h"));
        assert!(lines[1].contains("1h02m") && lines[1].contains("in 1m30s") && lines[1].ends_with("HTTP 503 busy"));
        assert!(lines[2].ends_with('…') && lines[2].chars().filter(|c| *c == 'x').count() == 99);
        assert_eq!(lines[3], "0 recording, 1 pending, 1 failed, 0 delivered");
    }
}
