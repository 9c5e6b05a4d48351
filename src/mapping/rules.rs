//! The `[mapping]` configuration table: every rule [`super::build_info`] applies, with the
//! documented defaults (docs/mapping.md). Parsing and checking only; the rules are applied in
//! the sibling modules.

use std::fmt;

use serde::Deserialize;

/// `[mapping]`: how participants, direction and ids are read from a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingRules {
    /// The agent rules, tried in this order for each participant; the first that recognises
    /// the participant decides its side.
    pub agent_rules: Vec<AgentRule>,
    /// `[min, max]` digits of an internal extension (a number without `+`).
    pub internal_extension_digits: [usize; 2],
    /// Domains (or IP addresses) of internal AORs; `.example.com` also matches subdomains.
    pub internal_domains: Vec<String>,
    /// Internal numbers: prefixes (`+1555012`) or inclusive ranges of equal length (`4000-4999`).
    pub internal_numbers: Vec<String>,
    /// Oracle/Acme realms (`apkt:realm`, `apkt:in-realm`) of internal parties.
    pub internal_realms: Vec<String>,
    /// Oracle/Acme realms of external parties (carrier trunks).
    pub external_realms: Vec<String>,
    /// Where `masterCallId` comes from: the first source that has a value wins.
    pub master_call_id: Vec<IdSource>,
    /// Where `numberDialed` comes from (inbound calls only): the first source with a number.
    pub number_dialed: Vec<DialedSource>,
    /// Where the contact's `referenceId` comes from: the first source with a value.
    pub reference_id: Vec<ReferenceSource>,
    /// Without vendor data naming the caller, take the first participant in the SRC's order
    /// as the caller (off by default: SRCs do not agree on the order).
    pub first_participant_is_caller: bool,
    /// Use the associate/disassociate times in metadata updates when they are plausible
    /// (within [`TIME_TOLERANCE_MS`] of the update's arrival); otherwise, or when off, a
    /// change takes effect when its request arrived.
    pub metadata_times: bool,
}

/// How far a metadata time may lie after its update's arrival (or before the previous one)
/// and still be believed: beyond it the SRC's clock is taken to be wrong (1970 dates and
/// times without a zone are seen in the field).
pub const TIME_TOLERANCE_MS: i64 = 2_000;

impl Default for MappingRules {
    fn default() -> Self {
        MappingRules {
            agent_rules: vec![
                AgentRule::RecordedUser,
                AgentRule::Realm,
                AgentRule::Extension,
                AgentRule::Domain,
                AgentRule::Number,
            ],
            internal_extension_digits: [2, 6],
            internal_domains: Vec::new(),
            internal_numbers: Vec::new(),
            internal_realms: Vec::new(),
            external_realms: Vec::new(),
            master_call_id: vec![
                IdSource::Vendor,
                IdSource::UuiUcid,
                IdSource::Header("Cisco-Gucid".to_owned()),
                IdSource::Group,
                IdSource::SipSessionId,
                IdSource::MetadataSession,
                IdSource::SessionId,
            ],
            number_dialed: vec![DialedSource::VendorDialed, DialedSource::VendorCalled, DialedSource::CalledParty],
            reference_id: vec![ReferenceSource::VendorUser, ReferenceSource::Extension],
            first_participant_is_caller: false,
            metadata_times: true,
        }
    }
}

impl MappingRules {
    /// Checks what serde cannot: ranges, duplicates, empty lists. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let [min, max] = self.internal_extension_digits;
        if min == 0 || min > max || max > 15 {
            return Err(format!(
                "mapping.internal_extension_digits = [{min}, {max}]: need 1 <= min <= max <= 15 (E.164 numbers have at most 15 digits)"
            ));
        }
        if self.master_call_id.is_empty() {
            return Err(
                "mapping.master_call_id is empty: list at least one source (\"session-id\" always has a value)".into(),
            );
        }
        for (key, dup) in [
            ("agent_rules", first_duplicate(&self.agent_rules)),
            ("master_call_id", first_duplicate(&self.master_call_id)),
            ("number_dialed", first_duplicate(&self.number_dialed)),
            ("reference_id", first_duplicate(&self.reference_id)),
        ] {
            if let Some(d) = dup {
                return Err(format!("mapping.{key} lists {d} twice"));
            }
        }
        for n in &self.internal_numbers {
            NumberPattern::parse(n).map_err(|e| format!("mapping.internal_numbers: {e}"))?;
        }
        for d in &self.internal_domains {
            if d.trim_start_matches('.').is_empty() || d.contains(['@', ':', ' ']) {
                return Err(format!("mapping.internal_domains: {d:?} is not a domain or address"));
            }
        }
        if let Some(r) = self.internal_realms.iter().find(|r| self.external_realms.contains(r)) {
            return Err(format!("mapping: realm {r:?} is both in internal_realms and external_realms"));
        }
        Ok(())
    }

    /// Whether `number` (digits, maybe a leading `+`) is an internal extension.
    pub(crate) fn is_extension(&self, number: &str) -> bool {
        let [min, max] = self.internal_extension_digits;
        !number.starts_with('+') && (min..=max).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit())
    }

    /// Whether `number` falls in `internal_numbers`.
    pub(crate) fn is_internal_number(&self, number: &str) -> bool {
        self.internal_numbers.iter().filter_map(|p| NumberPattern::parse(p).ok()).any(|p| p.matches(number))
    }

    /// Whether `host` is one of `internal_domains` (case-insensitive; `.x` matches `x` and
    /// its subdomains).
    pub(crate) fn is_internal_domain(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.internal_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            match d.strip_prefix('.') {
                Some(base) => host == base || host.ends_with(&d),
                None => host == d,
            }
        })
    }
}

fn first_duplicate<T: PartialEq + fmt::Display>(list: &[T]) -> Option<String> {
    list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)).map(|(_, x)| x.to_string())
}

/// One entry of `internal_numbers`.
enum NumberPattern<'a> {
    Prefix(&'a str),
    Range(&'a str, &'a str),
}

impl<'a> NumberPattern<'a> {
    fn parse(s: &'a str) -> Result<Self, String> {
        let number = |n: &str| {
            let digits = n.strip_prefix('+').unwrap_or(n);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        };
        match s.split_once('-') {
            Some((lo, hi)) if number(lo) && number(hi) && lo.len() == hi.len() && lo <= hi => Ok(Self::Range(lo, hi)),
            Some(_) => Err(format!("{s:?} is not a range of two numbers of equal length, low first")),
            None if number(s) => Ok(Self::Prefix(s)),
            None => Err(format!("{s:?} is not a number prefix (digits, maybe a leading +)")),
        }
    }

    fn matches(&self, n: &str) -> bool {
        match *self {
            Self::Prefix(p) => n.starts_with(p),
            // Equal lengths: string order is numeric order.
            Self::Range(lo, hi) => n.len() == lo.len() && (lo..=hi).contains(&n),
        }
    }
}

/// An agent rule (`mapping.agent_rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentRule {
    /// The party the SRC's vendor data names as recorded/served user (BroadWorks/Webex
    /// `userID`, Metaswitch `recordedParty`) is an agent.
    RecordedUser,
    /// A party whose Oracle realm is in `internal_realms` is an agent, in `external_realms` a
    /// customer.
    Realm,
    /// A party whose number is an internal extension is an agent.
    Extension,
    /// A party whose AOR domain is in `internal_domains` is an agent.
    Domain,
    /// A party whose number is in `internal_numbers` is an agent.
    Number,
}

impl AgentRule {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AgentRule::RecordedUser => "recorded-user",
            AgentRule::Realm => "realm",
            AgentRule::Extension => "extension",
            AgentRule::Domain => "domain",
            AgentRule::Number => "number",
        }
    }
}

impl fmt::Display for AgentRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `masterCallId` source (`mapping.master_call_id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum IdSource {
    /// `vendor`: the first vendor call id in the metadata (Oracle `apkt:ucid`, BroadWorks
    /// `extTrackingID`, Ribbon `gcid`, AudioCodes `GenesysUUID`, ...).
    Vendor,
    /// `vendor:NAME`: the vendor call id of that source name only (`vendor:ribbon:gcid`).
    VendorNamed(String),
    /// `uui-ucid`: the Avaya UCID in a `User-to-User` header, as its 20 decimal digits.
    UuiUcid,
    /// `group`: the RFC 7865 recording group id.
    Group,
    /// `sip-session-id`: the recorded call's `<sipSessionID>`.
    SipSessionId,
    /// `metadata-session`: the metadata `<session>` id.
    MetadataSession,
    /// `session-id`: the recording's own `sessionId` (always present).
    SessionId,
    /// `header:NAME`: that INVITE header's value, else the header as the SRC copied it into
    /// its vendor data (Oracle `<apkt:header label=...>`).
    Header(String),
}

impl TryFrom<String> for IdSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "vendor" => IdSource::Vendor,
            "uui-ucid" => IdSource::UuiUcid,
            "group" => IdSource::Group,
            "sip-session-id" => IdSource::SipSessionId,
            "metadata-session" => IdSource::MetadataSession,
            "session-id" => IdSource::SessionId,
            _ => {
                if let Some(h) = header_name(&s)? {
                    IdSource::Header(h)
                } else if let Some(v) = s.strip_prefix("vendor:").filter(|v| !v.is_empty()) {
                    IdSource::VendorNamed(v.to_owned())
                } else {
                    return Err(format!(
                        "unknown masterCallId source {s:?} (vendor, vendor:NAME, uui-ucid, group, sip-session-id, metadata-session, session-id, header:NAME)"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::Vendor => f.write_str("vendor"),
            IdSource::VendorNamed(n) => write!(f, "vendor:{n}"),
            IdSource::UuiUcid => f.write_str("uui-ucid"),
            IdSource::Group => f.write_str("group"),
            IdSource::SipSessionId => f.write_str("sip-session-id"),
            IdSource::MetadataSession => f.write_str("metadata-session"),
            IdSource::SessionId => f.write_str("session-id"),
            IdSource::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// A `numberDialed` source (`mapping.number_dialed`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DialedSource {
    /// `vendor-dialed`: the number the vendor says was dialed (Metaswitch `dialedDigits`,
    /// Oracle `request-uri` (its `dnis=` parameter when present), BroadWorks original called
    /// number, else its call center queue's number, else its called
    /// number).
    VendorDialed,
    /// `vendor-called`: the called party as the vendor names it (BroadWorks called number,
    /// Ribbon `tohdr`).
    VendorCalled,
    /// `called-party`: the number of the participant that was called.
    CalledParty,
    /// `request-uri`: the recording INVITE's Request-URI.
    RequestUri,
    /// `header:NAME`: that INVITE header (a URI or a number), else as the SRC copied it into
    /// its vendor data.
    Header(String),
}

impl TryFrom<String> for DialedSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "vendor-dialed" => DialedSource::VendorDialed,
            "vendor-called" => DialedSource::VendorCalled,
            "called-party" => DialedSource::CalledParty,
            "request-uri" => DialedSource::RequestUri,
            _ => match header_name(&s)? {
                Some(h) => DialedSource::Header(h),
                None => {
                    return Err(format!(
                        "unknown numberDialed source {s:?} (vendor-dialed, vendor-called, called-party, request-uri, header:NAME)"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for DialedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialedSource::VendorDialed => f.write_str("vendor-dialed"),
            DialedSource::VendorCalled => f.write_str("vendor-called"),
            DialedSource::CalledParty => f.write_str("called-party"),
            DialedSource::RequestUri => f.write_str("request-uri"),
            DialedSource::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// A `referenceId` source (`mapping.reference_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceSource {
    /// The vendor's user id of the recorded user (BroadWorks `userID`), for that party.
    VendorUser,
    /// The party's number when it is an internal extension.
    Extension,
    /// The party's AOR as sent.
    Aor,
}

impl fmt::Display for ReferenceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReferenceSource::VendorUser => "vendor-user",
            ReferenceSource::Extension => "extension",
            ReferenceSource::Aor => "aor",
        })
    }
}

/// `header:NAME` → `Some(NAME)`; an empty or malformed name is an error; anything else `None`.
fn header_name(s: &str) -> Result<Option<String>, String> {
    let Some(h) = s.strip_prefix("header:") else { return Ok(None) };
    // RFC 3261 §25.1: a header name is a token.
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)) {
        return Err(format!("{s:?}: header:NAME needs a SIP header name"));
    }
    Ok(Some(h.to_owned()))
}
