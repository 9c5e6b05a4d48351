//! The `status` command: asks Tethr what became of some sessions and formats one line each.
//!
//! It uses the same client as delivery (token, proxy, CA bundle), so a line that answers here
//! also proves the gateway's credentials and network path work. It changes nothing.

use super::tethr::{CallSessionStatus, TethrClient, TethrError, TethrSettings};

/// Most sessionIds asked about in one request (the purge API's documented limit; the status
/// API documents none).
const BATCH: usize = 100;

/// The status of each of `session_ids`, in the order given. A session missing from Tethr's
/// reply is reported as `NotFound`, which is what Tethr means by leaving it out.
pub async fn query(settings: TethrSettings, session_ids: &[String]) -> Result<Vec<CallSessionStatus>, TethrError> {
    let client = TethrClient::new(settings)?;
    let mut found = Vec::new();
    for batch in session_ids.chunks(BATCH) {
        found.extend(client.call_status(batch).await?);
    }
    Ok(session_ids
        .iter()
        .map(|id| {
            found
                .iter()
                .find(|s| &s.session_id == id)
                .cloned()
                .unwrap_or_else(|| CallSessionStatus {
                    session_id: id.clone(),
                    status: "NotFound".into(),
                    call_id: None,
                    duration_sec: None,
                })
        })
        .collect())
}

/// `<sessionId> <status> callId=<id> durationSec=<n>`, the last two only when known.
pub fn line(s: &CallSessionStatus) -> String {
    let mut line = format!("{} {}", s.session_id, s.status);
    if let Some(id) = &s.call_id {
        line.push_str(&format!(" callId={id}"));
    }
    if let Some(d) = s.duration_sec {
        line.push_str(&format!(" durationSec={d}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_call_id_and_duration_only_when_present() {
        let mut s = CallSessionStatus {
            session_id: "rs-1".into(),
            status: "Complete".into(),
            call_id: Some("bbsnbltht".into()),
            duration_sec: Some(93.0),
        };
        assert_eq!(line(&s), "rs-1 Complete callId=bbsnbltht durationSec=93");
        s.call_id = None;
        s.duration_sec = None;
        s.status = "NotFound".into();
        assert_eq!(line(&s), "rs-1 NotFound");
    }
}
