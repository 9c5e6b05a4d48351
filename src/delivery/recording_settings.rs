//! Tethr's recording settings (`GET /sources/v1/recordingSettings`): which agents' calls are to
//! be sent, and the handle the runtime asks per call.
//!
//! The list is `[{"refType","source","lookupId","recordingSetting"}]`; an agent whose lookupId
//! is listed with `None` is recorded, one listed `Disabled` or not listed at all is not, and an
//! empty list means the feature is not in use on that instance (tethr-archived-call-upload-api,
//! "Recording Settings"). [`decide`] is the pure rule; [`RecordingSettingsHandle`] keeps the last
//! good list behind a lock so the signalling task can ask cheaply and synchronously; [`run`]
//! fetches it at start and every interval, keeps a copy in `<spool>/recording-settings.json` and
//! falls back to that copy when the first fetch fails. When no list has ever been had, every
//! call is recorded (and a warning logged at each failed fetch): losing a call is worse than
//! sending one Tethr would have filtered.
//!
//! This module does not stop a recording itself; the runtime acts on the decision.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::tethr::{TethrClient, TethrError, lossy};

/// Where the last good list is kept, under the spool root.
pub const SETTINGS_FILE: &str = "recording-settings.json";
const PATH: &str = "sources/v1/recordingSettings";

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSetting {
    /// e.g. `Agent`.
    #[serde(default, alias = "RefType")]
    pub ref_type: String,
    /// The system the id belongs to.
    #[serde(default, alias = "Source")]
    pub source: String,
    /// The agent's id (a user id, extension or number).
    #[serde(alias = "LookupId")]
    pub lookup_id: String,
    /// `None` (record) or `Disabled` (do not send).
    #[serde(default, alias = "RecordingSetting")]
    pub recording_setting: String,
}

/// Which entries apply to this gateway (`recording_settings_ref_type`/`_source`); an unset
/// field matches every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsFilter {
    /// Only entries with this `refType` (case-insensitive).
    pub ref_type: Option<String>,
    /// Only entries with this `source` (case-insensitive).
    pub source: Option<String>,
}

impl SettingsFilter {
    fn applies(&self, s: &RecordingSetting) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_ref().is_none_or(|w| w.eq_ignore_ascii_case(have));
        ok(&self.ref_type, &s.ref_type) && ok(&self.source, &s.source)
    }
}

/// Whether a call is to be recorded and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsDecision {
    /// Record and send it.
    Record,
    /// Do not record it; `reason` is for the spool journal.
    Skip {
        /// Why, e.g. "agent 1002 is Disabled in Tethr's recording settings".
        reason: String,
    },
    /// The list (after the filter) is empty: the feature is not in use; record everything.
    NotInUse,
}

/// The keys an identifier matches by: itself, and for a SIP/tel URI or `user@host` its user
/// part (without parameters), all lowercase.
fn keys(id: &str) -> Vec<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
    let mut keys = vec![id.clone()];
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|scheme| id.strip_prefix(scheme))
        .unwrap_or(&id);
    let user = rest.split(['@', ';', '?']).next().unwrap_or(rest);
    if !user.is_empty() && user != id {
        keys.push(user.to_owned());
    }
    keys
}

/// The decision for a call whose agent is known by `candidates` (referenceId/AOR, number, user
/// part; any order), given the list. A candidate matches a `lookupId` exactly,
/// case-insensitively, or by the user part of a SIP URI on either side. When several entries
/// match, a `Disabled` one wins: an explicit opt-out is honoured.
pub fn decide(list: &[RecordingSetting], filter: &SettingsFilter, candidates: &[String]) -> SettingsDecision {
    let mut applicable = list.iter().filter(|s| filter.applies(s)).peekable();
    if applicable.peek().is_none() {
        return SettingsDecision::NotInUse;
    }
    let wanted: Vec<String> = candidates.iter().flat_map(|c| keys(c)).collect();
    let mut listed = None;
    for s in applicable {
        if !keys(&s.lookup_id).iter().any(|k| wanted.contains(k)) {
            continue;
        }
        if s.recording_setting.eq_ignore_ascii_case("Disabled") {
            return SettingsDecision::Skip {
                reason: format!("agent {} is Disabled in Tethr's recording settings", s.lookup_id),
            };
        }
        listed = Some(s);
    }
    match listed {
        Some(_) => SettingsDecision::Record,
        None => SettingsDecision::Skip {
            reason: "the agent is not listed in Tethr's recording settings".into(),
        },
    }
}

struct Shared {
    /// None: the feature is off (`honour_recording_settings = false`).
    filter: Option<SettingsFilter>,
    /// The last good list; None until one was fetched or loaded.
    list: RwLock<Option<Arc<Vec<RecordingSetting>>>>,
    /// "not in use" was logged for the current list.
    not_in_use_logged: AtomicBool,
    /// Becomes true once a list is in hand.
    loaded: watch::Sender<bool>,
}

/// The runtime's view of the recording settings: cheap to clone, `decide` is synchronous and
/// takes a read lock only.
#[derive(Clone)]
pub struct RecordingSettingsHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RecordingSettingsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSettingsHandle")
            .field("honoured", &self.shared.filter.is_some())
            .finish()
    }
}

impl RecordingSettingsHandle {
    /// A handle for a gateway that does not honour recording settings: every call is recorded.
    pub fn off() -> RecordingSettingsHandle {
        Self::with_filter(None)
    }

    pub(crate) fn with_filter(filter: Option<SettingsFilter>) -> RecordingSettingsHandle {
        RecordingSettingsHandle {
            shared: Arc::new(Shared {
                filter,
                list: RwLock::new(None),
                not_in_use_logged: AtomicBool::new(false),
                loaded: watch::Sender::new(false),
            }),
        }
    }

    /// Whether to record a call whose agent is known by `candidates`. Record when the feature
    /// is off or no list was ever had (see the module doc).
    pub fn decide(&self, candidates: &[String]) -> SettingsDecision {
        let Some(filter) = &self.shared.filter else {
            return SettingsDecision::Record;
        };
        let list = self.shared.list.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(list) = list else {
            return SettingsDecision::Record;
        };
        let decision = decide(&list, filter, candidates);
        if decision == SettingsDecision::NotInUse && !self.shared.not_in_use_logged.swap(true, Ordering::Relaxed) {
            tracing::info!("recording settings not in use on this instance (the list is empty); recording every call");
        }
        decision
    }

    /// Whether a list is in hand (fetched, or loaded from the saved copy).
    pub fn has_list(&self) -> bool {
        self.shared.list.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Resolves once a list is in hand (fetched, or loaded from the saved copy); never when
    /// the feature is off or no list can be had.
    pub async fn loaded(&self) {
        let mut rx = self.shared.loaded.subscribe();
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    fn set(&self, list: Vec<RecordingSetting>) {
        {
            let mut slot = self.shared.list.write().unwrap_or_else(|e| e.into_inner());
            if slot.as_deref() != Some(&list) {
                self.shared.not_in_use_logged.store(false, Ordering::Relaxed);
            }
            *slot = Some(Arc::new(list));
        }
        self.shared.loaded.send_replace(true);
    }
}

/// Fetches the list once.
async fn fetch(client: &TethrClient) -> Result<Vec<RecordingSetting>, TethrError> {
    let reply = client.request(Method::GET, PATH, None).await?;
    if !reply.status.is_success() {
        return Err(TethrError::Status {
            path: PATH,
            status: reply.status.as_u16(),
            body: lossy(&reply.body),
        });
    }
    serde_json::from_slice(&reply.body).map_err(|e| TethrError::Reply {
        path: PATH,
        reason: e.to_string(),
    })
}

/// Writes the list beside the spool (temp file and rename, so a crash leaves the old copy).
async fn save(path: &Path, list: &[RecordingSetting]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, path).await
}

async fn load(path: &Path) -> Option<Vec<RecordingSetting>> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keeps `handle` up to date: fetches at once and then every `interval` with the current
/// client, until `stop` changes. Returns when it does.
pub(crate) async fn run(
    handle: RecordingSettingsHandle,
    mut client: watch::Receiver<Arc<TethrClient>>,
    interval: Duration,
    spool_root: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let file = spool_root.join(SETTINGS_FILE);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        let current = client.borrow_and_update().clone();
        match fetch(&current).await {
            Ok(list) => {
                if first || handle.shared.list.read().unwrap_or_else(|e| e.into_inner()).as_deref() != Some(&list) {
                    tracing::info!(entries = list.len(), "fetched Tethr's recording settings");
                }
                if let Err(e) = save(&file, &list).await {
                    tracing::warn!(error = %e, path = %file.display(), "cannot save the recording settings");
                }
                handle.set(list);
            }
            Err(e) if first => match load(&file).await {
                Some(list) => {
                    tracing::warn!(error = %e, entries = list.len(),
                        "cannot fetch Tethr's recording settings; using the copy saved by an earlier run");
                    handle.set(list);
                }
                None => tracing::warn!(error = %e,
                    "cannot fetch Tethr's recording settings and no saved copy exists; recording every call until they can be fetched"),
            },
            Err(e) if handle.has_list() => {
                tracing::warn!(error = %e, "cannot fetch Tethr's recording settings; keeping the last good copy");
            }
            Err(e) => tracing::warn!(error = %e,
                "cannot fetch Tethr's recording settings; recording every call until they can be fetched"),
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lookup_id: &str, setting: &str) -> RecordingSetting {
        RecordingSetting {
            ref_type: "Agent".into(),
            source: "Chaz".into(),
            lookup_id: lookup_id.into(),
            recording_setting: setting.into(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn list() -> Vec<RecordingSetting> {
        vec![
            entry("1001", "None"),
            entry("1002", "Disabled"),
            entry("alice@example.com", "None"),
        ]
    }

    const ALL: SettingsFilter = SettingsFilter {
        ref_type: None,
        source: None,
    };

    #[test]
    fn listed_with_none_is_recorded() {
        assert_eq!(decide(&list(), &ALL, &ids(&["1001"])), SettingsDecision::Record);
    }

    #[test]
    fn listed_disabled_or_not_listed_is_skipped() {
        assert!(matches!(
            decide(&list(), &ALL, &ids(&["1002"])),
            SettingsDecision::Skip { reason } if reason.contains("Disabled")
        ));
        assert!(matches!(
            decide(&list(), &ALL, &ids(&["4711", "sip:4711@pbx"])),
            SettingsDecision::Skip { reason } if reason.contains("not listed")
        ));
        assert!(matches!(decide(&list(), &ALL, &[]), SettingsDecision::Skip { .. }));
    }

    #[test]
    fn an_empty_list_means_not_in_use() {
        assert_eq!(decide(&[], &ALL, &ids(&["1001"])), SettingsDecision::NotInUse);
    }

    #[test]
    fn matching_is_case_insensitive_and_by_sip_user_part() {
        for c in ["sip:1001@pbx.example.com", "<sips:1001;user=phone@pbx>", "tel:1001", "1001@pbx"] {
            assert_eq!(decide(&list(), &ALL, &ids(&[c])), SettingsDecision::Record, "{c}");
        }
        assert_eq!(decide(&list(), &ALL, &ids(&["ALICE@Example.COM"])), SettingsDecision::Record);
        assert_eq!(decide(&list(), &ALL, &ids(&["sip:Alice@example.com"])), SettingsDecision::Record);
        assert!(matches!(decide(&list(), &ALL, &ids(&["sip:10011@pbx"])), SettingsDecision::Skip { .. }));
        // A lookupId that is itself a URI matches the bare user part.
        let uri_list = vec![entry("sip:2001@pbx", "None")];
        assert_eq!(decide(&uri_list, &ALL, &ids(&["2001"])), SettingsDecision::Record);
    }

    #[test]
    fn disabled_wins_over_none_when_two_identifiers_match() {
        assert!(matches!(
            decide(&list(), &ALL, &ids(&["1001", "1002"])),
            SettingsDecision::Skip { .. }
        ));
    }

    #[test]
    fn filters_select_entries_and_an_empty_selection_is_not_in_use() {
        let mut l = list();
        l.push(RecordingSetting {
            ref_type: "Station".into(),
            ..entry("5000", "None")
        });
        let stations = SettingsFilter {
            ref_type: Some("station".into()),
            source: None,
        };
        assert_eq!(decide(&l, &stations, &ids(&["5000"])), SettingsDecision::Record);
        assert!(matches!(decide(&l, &stations, &ids(&["1001"])), SettingsDecision::Skip { .. }));
        let other_source = SettingsFilter {
            ref_type: None,
            source: Some("Other".into()),
        };
        assert_eq!(decide(&l, &other_source, &ids(&["1001"])), SettingsDecision::NotInUse);
    }

    #[test]
    fn the_handle_records_when_off_or_before_any_list() {
        assert_eq!(RecordingSettingsHandle::off().decide(&ids(&["1002"])), SettingsDecision::Record);
        let h = RecordingSettingsHandle::with_filter(Some(ALL));
        assert_eq!(h.decide(&ids(&["1002"])), SettingsDecision::Record);
        h.set(list());
        assert!(matches!(h.decide(&ids(&["1002"])), SettingsDecision::Skip { .. }));
        h.set(Vec::new());
        assert_eq!(h.decide(&ids(&["1002"])), SettingsDecision::NotInUse);
    }

    #[test]
    fn the_list_parses_as_tethr_sends_it() {
        let l: Vec<RecordingSetting> = serde_json::from_str(
            r#"[{"refType":"Agent","source":"Chaz","lookupId":"1001","recordingSetting":"None"}]"#,
        )
        .unwrap();
        assert_eq!(l, vec![entry("1001", "None")]);
    }
}
