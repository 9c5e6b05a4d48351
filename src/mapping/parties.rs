//! Who is on the agent side and who on the customer side, and which way the call went.
//!
//! Participants come from the metadata (replayed by [`super::history`]) or, for SRCs that send
//! none (Cisco network-based recording), from `X-Cisco-Recording-Participant` headers. Each is
//! put on a side by the first of `mapping.agent_rules` that recognises it; the others take the
//! opposite side of those recognised; when no rule recognises anyone the first participant is
//! guessed to be the agent. The decision and its reason are kept for `metaData`.

use serde_json::Value;

use super::history::Track;
use super::identity::{host_part, phone_number, same_party, user_part};
use super::rules::{AgentRule, MappingRules};
use crate::siprec::metadata::{MdParticipant, Metadata};

/// A side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Channel 0 of the `agent-customer` layout.
    Agent = 0,
    /// Channel 1 of the `agent-customer` layout.
    Customer = 1,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Agent => "agent",
            Side::Customer => "customer",
        }
    }
}

/// A participant with its side.
#[derive(Debug, Clone)]
pub(crate) struct Party {
    pub track: Track,
    pub side: Side,
    /// Why: an agent rule's name, `other-party`, `internal-call`, or `guess`.
    pub rule: &'static str,
    /// Oracle `apkt:realm` / `apkt:in-realm` of the participant.
    pub realm: Option<String>,
    /// Oracle `apkt:callingParty` of the participant.
    pub calling: Option<bool>,
}

impl Party {
    pub fn aor(&self) -> Option<&str> {
        self.track.p.aor.as_deref()
    }
    pub fn number(&self) -> Option<String> {
        self.aor().and_then(phone_number)
    }
}

/// Vendor facts, from the first document that states each (the INVITE's, unless it lacked
/// the fact).
#[derive(Debug, Default)]
pub(crate) struct Hints<'a> {
    pub recorded_user: Option<&'a str>,
    pub originated: Option<bool>,
    pub calling: Option<&'a str>,
    pub called: Option<&'a str>,
    pub dialed: Option<&'a str>,
}

impl<'a> Hints<'a> {
    /// Whether `aor` is the vendor's recorded user: its user id, or, when the vendor says
    /// whether that user placed or received the call, the calling (`origCall`) or called
    /// (`termCall`) party of that call half. Webex sends the user id as `5550108105@...`
    /// while the participant is the extension `8105`, the call half's calling number.
    pub fn is_recorded_user(&self, aor: &str) -> bool {
        if self.recorded_user.is_some_and(|u| same_party(u, aor)) {
            return true;
        }
        let own = match self.originated {
            Some(true) => self.calling,
            Some(false) => self.called,
            None => None,
        };
        self.recorded_user.is_some() && own.is_some_and(|n| same_party(n, aor))
    }

    pub fn from_docs(docs: &[&'a Metadata]) -> Self {
        let first = |f: &dyn Fn(&'a Metadata) -> Option<&'a str>| {
            docs.iter().find_map(|d| f(d).filter(|v| !v.trim().is_empty()))
        };
        Hints {
            recorded_user: first(&|d| d.vendor.recorded_user.as_deref()),
            originated: docs.iter().find_map(|d| d.vendor.recorded_user_originated),
            calling: first(&|d| d.vendor.calling.as_deref()),
            called: first(&|d| d.vendor.called.as_deref()),
            dialed: first(&|d| d.vendor.dialed.as_deref()),
        }
    }
}

/// Participants named by `X-Cisco-Recording-Participant: <uri>;media-index="N"` headers (Cisco
/// network-based recording: no metadata; the index is the m-line, taken here as the recorded
/// stream of that position).
pub(crate) fn cisco_participants(headers: &[(String, String)], streams: usize) -> Vec<Track> {
    let mut tracks: Vec<Track> = Vec::new();
    for (name, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("X-Cisco-Recording-Participant")) {
        let uri = super::identity::uri_of(value.split(';').next().unwrap_or(""));
        let index = value
            .split(';')
            .skip(1)
            .find_map(|p| p.split_once('=').filter(|(k, _)| k.trim().eq_ignore_ascii_case("media-index")))
            .and_then(|(_, v)| v.trim().trim_matches('"').parse::<usize>().ok());
        let p = MdParticipant {
            id: format!("{name}#{}", tracks.len()),
            aor: Some(uri.to_owned()),
            ..MdParticipant::default()
        };
        let streams: Vec<usize> = index.filter(|&i| i < streams).into_iter().collect();
        tracks.push(Track::whole_call(p, &streams));
    }
    tracks
}

/// Oracle extension facts hanging off participant `id`: (realm, callingParty).
fn oracle_facts(docs: &[&Metadata], id: &str) -> (Option<String>, Option<bool>) {
    let mut realm = None;
    let mut calling = None;
    for ext in docs.iter().flat_map(|d| &d.extensions).filter(|e| e.parent.as_deref() == Some(id)) {
        // The party's own realm; `in-realm` (where the call entered the SBC) only without it.
        realm = realm
            .or_else(|| find_text(&ext.data, &["realm"]))
            .or_else(|| find_text(&ext.data, &["in-realm"]));
        calling =
            calling.or_else(|| find_text(&ext.data, &["callingParty"]).map(|v| v.trim().eq_ignore_ascii_case("true")));
    }
    (realm, calling)
}

/// The text of the first key named one of `keys` anywhere in extension JSON (a string, the
/// first of an array, or an object's `#text`/`$text`).
pub(crate) fn find_text(v: &Value, keys: &[&str]) -> Option<String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Value::Array(a) => a.iter().find_map(text),
            Value::Object(o) => o.get("#text").or_else(|| o.get("$text")).and_then(text),
            _ => None,
        }
    }
    match v {
        Value::Object(o) => o
            .iter()
            .find_map(|(k, v)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)).then(|| text(v)).flatten())
            .or_else(|| o.values().find_map(|v| find_text(v, keys))),
        Value::Array(a) => a.iter().find_map(|v| find_text(v, keys)),
        _ => None,
    }
}

/// The outcome of classification.
#[derive(Debug, Default)]
pub(crate) struct Sides {
    pub parties: Vec<Party>,
    /// No rule recognised anyone: the agent is a guess.
    pub guessed: bool,
    /// Every participant was recognised as internal.
    pub all_internal: bool,
    /// Index of the party that is the vendor's recorded user.
    pub recorded: Option<usize>,
    pub notes: Vec<String>,
}

/// Puts each participant on a side (see the module documentation).
pub(crate) fn classify(tracks: Vec<Track>, docs: &[&Metadata], hints: &Hints<'_>, rules: &MappingRules) -> Sides {
    let mut sides = Sides::default();
    let mut verdicts: Vec<Option<(Side, &'static str)>> = Vec::new();
    for t in tracks {
        let (realm, calling) = oracle_facts(docs, &t.p.id);
        let aor = t.p.aor.as_deref();
        let number = aor.and_then(phone_number);
        let recorded = aor.is_some_and(|a| hints.is_recorded_user(a));
        let verdict = rules.agent_rules.iter().find_map(|rule| {
            let side = match rule {
                AgentRule::RecordedUser => recorded.then_some(Side::Agent),
                AgentRule::Realm => realm.as_deref().and_then(|r| {
                    if rules.internal_realms.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                        Some(Side::Agent)
                    } else if rules.external_realms.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                        Some(Side::Customer)
                    } else {
                        None
                    }
                }),
                AgentRule::Extension => number.as_deref().filter(|n| rules.is_extension(n)).map(|_| Side::Agent),
                AgentRule::Domain => {
                    aor.and_then(host_part).filter(|h| rules.is_internal_domain(h)).map(|_| Side::Agent)
                }
                AgentRule::Number => number.as_deref().filter(|n| rules.is_internal_number(n)).map(|_| Side::Agent),
            };
            side.map(|s| (s, rule.as_str()))
        });
        if sides.recorded.is_none() && recorded {
            sides.recorded = Some(sides.parties.len());
        }
        verdicts.push(verdict);
        sides.parties.push(Party { track: t, side: Side::Agent, rule: "guess", realm, calling });
    }
    if hints.recorded_user.is_some() && sides.recorded.is_none() && !sides.parties.is_empty() {
        sides.notes.push("the vendor's recorded user matches no participant".into());
    }
    let any = |side| verdicts.iter().flatten().any(|(s, _)| *s == side);
    let (any_agent, any_customer) = (any(Side::Agent), any(Side::Customer));
    if !any_agent && !any_customer {
        if sides.parties.is_empty() {
            return sides;
        }
        // Neither side can be told apart: the SRC's first participant (with audio, if any
        // has) is taken as the agent.
        let first = sides.parties.iter().position(|p| !p.track.spans.is_empty()).unwrap_or(0);
        for (i, p) in sides.parties.iter_mut().enumerate() {
            p.side = if i == first { Side::Agent } else { Side::Customer };
        }
        sides.guessed = true;
        sides.notes.push(
            "no agent rule recognised any participant: the first participant in the SRC's order is taken as the agent (a guess); direction is Unknown"
                .into(),
        );
        return sides;
    }
    // The others are the opposite of those recognised (customers when both sides were).
    let other = if any_agent { Side::Customer } else { Side::Agent };
    for (p, v) in sides.parties.iter_mut().zip(&verdicts) {
        (p.side, p.rule) = v.unwrap_or((other, "other-party"));
    }
    sides.all_internal = sides.parties.iter().all(|p| p.side == Side::Agent);
    sides
}

/// An internal call has no customer, but Tethr wants each line on its own channel: the
/// recorded user (else the caller, else the first participant with audio) stays the agent and
/// the other internal participants go to the customer side.
pub(crate) fn split_internal(sides: &mut Sides, origin: Option<Originator>) {
    if !sides.all_internal || sides.parties.len() < 2 {
        return;
    }
    let caller = match origin {
        Some(Originator::Party(i, true)) => Some(i),
        _ => None,
    };
    let keep =
        sides.recorded.or(caller).or_else(|| sides.parties.iter().position(|p| !p.track.spans.is_empty())).unwrap_or(0);
    for (_, p) in sides.parties.iter_mut().enumerate().filter(|(i, _)| *i != keep) {
        p.side = Side::Customer;
        p.rule = "internal-call";
    }
    sides.notes.push("internal call: the other internal participants are on the customer channel".into());
}

/// Which party on `side` gets the contact: the vendor's recorded user, then the one that
/// sent audio longest, then the SRC's order.
pub(crate) fn primary(sides: &Sides, side: Side, end_ms: u64) -> Option<usize> {
    if let Some(r) = sides.recorded.filter(|&r| sides.parties[r].side == side) {
        return Some(r);
    }
    let on_side = (0..sides.parties.len()).filter(|&i| sides.parties[i].side == side);
    // max_by_key keeps the last of equals: compare by (audio, reverse order).
    on_side.max_by_key(|&i| (sides.parties[i].track.audio_ms(end_ms), std::cmp::Reverse(i)))
}

/// The party that placed the call, and how that is known.
pub(crate) fn originator(sides: &Sides, hints: &Hints<'_>, rules: &MappingRules) -> Option<(Originator, &'static str)> {
    let find = |who: &str| sides.parties.iter().position(|p| p.aor().is_some_and(|a| same_party(who, a)));
    if let Some(orig) = hints.originated {
        let who = match sides.recorded {
            Some(r) => Originator::Party(r, orig),
            // The recorded user is the SRC's subscriber: the agent, even when unmatched.
            None => Originator::RecordedAgent(orig),
        };
        return Some((who, "vendor: recorded user placed/received the call"));
    }
    if let Some(i) = sides.parties.iter().position(|p| p.calling == Some(true)) {
        return Some((Originator::Party(i, true), "vendor: Oracle callingParty"));
    }
    if let Some(i) = hints.calling.and_then(find) {
        return Some((Originator::Party(i, true), "vendor: calling party"));
    }
    if let Some(i) = hints.called.and_then(find) {
        return Some((Originator::Party(i, false), "vendor: called party"));
    }
    if rules.first_participant_is_caller && !sides.parties.is_empty() {
        return Some((
            Originator::Party(0, true),
            "first participant is the caller (mapping.first_participant_is_caller)",
        ));
    }
    None
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Originator {
    /// Party `.0` placed the call (`.1 == true`) or received it (`false`).
    Party(usize, bool),
    /// The vendor's recorded user, matching no participant, placed (`true`) or received it.
    RecordedAgent(bool),
}

/// Tethr's `direction` and the reason for it.
pub(crate) fn direction(sides: &Sides, origin: Option<(Originator, &'static str)>) -> (&'static str, String) {
    if sides.guessed || sides.parties.is_empty() {
        return ("Unknown", "the sides are not known".into());
    }
    if sides.all_internal {
        return ("Internal", "every participant is internal".into());
    }
    let Some((who, how)) = origin else {
        return ("Unknown", "nothing says who called whom".into());
    };
    let (caller_side, placed) = match who {
        Originator::Party(i, placed) => (sides.parties[i].side, placed),
        Originator::RecordedAgent(placed) => (Side::Agent, placed),
    };
    // The caller's side, or the other side when the party named received the call.
    let agent_called_out = (caller_side == Side::Agent) == placed;
    let d = if agent_called_out { "Outbound" } else { "Inbound" };
    (d, how.to_owned())
}

/// The identifiers the recording settings may list for a party: vendor user id and its
/// user part, the AOR, its number, its user part.
pub(crate) fn identifiers(party: &Party, vendor_user: Option<&str>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        let s = s.trim();
        if !s.is_empty() && !ids.iter().any(|i| i == s) {
            ids.push(s.to_owned());
        }
    };
    if let Some(u) = vendor_user {
        add(u);
        if let Some(user) = user_part(u) {
            add(user);
        }
    }
    if let Some(aor) = party.aor() {
        add(aor);
        if let Some(n) = phone_number(aor) {
            add(&n);
        }
        if let Some(user) = user_part(aor) {
            add(user);
        }
    }
    ids
}
