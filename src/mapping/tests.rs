use std::time::{Duration, Instant};

use super::*;
use crate::siprec::metadata::{DataMode, Extension, MdParticipant, MdSession, MdStream, Metadata, VendorHints};
use rules::{AgentRule, IdSource};

/// 2025-11-24T16:00:00.123Z: the 200 OK of every test call.
fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123)
}

fn at(ms: u64) -> jiff::Timestamp {
    jiff::Timestamp::try_from(start() + Duration::from_millis(ms)).unwrap()
}

fn party(id: &str, aor: &str, name: Option<&str>, sends: &[&str]) -> MdParticipant {
    MdParticipant {
        id: id.into(),
        aor: Some(aor.into()),
        name: name.map(Into::into),
        sends: sends.iter().map(|s| s.to_string()).collect(),
        streams_given: !sends.is_empty(),
        ..MdParticipant::default()
    }
}

fn stream(id: &str, label: &str) -> MdStream {
    MdStream { id: id.into(), label: Some(label.into()), ..MdStream::default() }
}

fn complete(participants: Vec<MdParticipant>, streams: Vec<MdStream>) -> Metadata {
    Metadata {
        sessions: vec![MdSession {
            id: "sess-1".into(),
            sip_session_ids: vec!["orig-call@sbc".into()],
            ..MdSession::default()
        }],
        participants,
        streams,
        ..Metadata::default()
    }
}

fn partial(participants: Vec<MdParticipant>, streams: Vec<MdStream>) -> Metadata {
    Metadata { data_mode: DataMode::Partial, participants, streams, ..Metadata::default() }
}

/// A recorded call: the facts a `CallSummary` borrows.
struct Call {
    t0: Instant,
    len_ms: u64,
    streams: Vec<ChannelSummary>,
    changes: Vec<MetadataChange>,
    rules: MappingRules,
    layout: LayoutKind,
    headers: Vec<(String, String)>,
}

impl Call {
    /// Active streams with these labels, each with audio; no metadata yet.
    fn new(labels: &[&str]) -> Call {
        let stats = StreamStats { packets: 3000, ..StreamStats::default() };
        Call {
            t0: crate::clock::now(),
            len_ms: 60_500,
            streams: labels
                .iter()
                .map(|l| ChannelSummary { label: Some(l.to_string()), codec: "PCMU", stats, active: true, media: Default::default() })
                .collect(),
            changes: Vec::new(),
            rules: MappingRules::default(),
            layout: LayoutKind::AgentCustomer,
            headers: Vec::new(),
        }
    }

    fn invite(mut self, md: Metadata) -> Call {
        self.changes.push(MetadataChange { at_ms: 0, via: "INVITE", outcome: MetadataOutcome::Parsed(Box::new(md)) });
        self
    }

    fn update(mut self, at_ms: u64, via: &'static str, md: Metadata) -> Call {
        self.changes.push(MetadataChange { at_ms, via, outcome: MetadataOutcome::Parsed(Box::new(md)) });
        self
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn summary(&self) -> CallSummary<'_> {
        CallSummary {
            session_id: "rs-1@sbc",
            t0: self.t0,
            start: start(),
            end: start() + Duration::from_millis(self.len_ms),
            streams: &self.streams,
            metadata: &self.changes,
            layout: self.layout,
            rules: &self.rules,
            audio_format: "wav",
            request_uri: Some("sip:srs@recorder.example"),
            from: Some("<sip:src@sbc.example>;tag=1"),
            to: Some("<sip:srs@recorder.example>"),
            sip_headers: &self.headers,
            all_headers: &self.headers,
            end_reason: "bye",
            notes: &[],
        }
    }

    fn map(&self) -> Mapped {
        let m = build_info(&self.summary());
        assert!(!has_null(&m.info), "null in {}", m.info);
        assert_eq!(
            m.info["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["channel"].as_u64())
                .max()
                .map_or(0, |c| c + 1) as usize,
            m.layout.channels.len().min(2),
            "contact channels must match the layout: {}",
            m.info["contacts"]
        );
        m
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

fn src(stream: usize, from_ms: u64, to_ms: Option<u64>) -> SourceSpan {
    SourceSpan { stream, from_ms, to_ms }
}

fn notes(m: &Mapped) -> String {
    m.info["metaData"]["mapping"]["notes"].to_string()
}

/// RFC 7865 two-party call: the caller on label 1, extension 4711 on label 2.
fn two_party() -> Metadata {
    complete(
        vec![
            party("p1", "sip:+15551234567@carrier.example", Some("Pat Caller"), &["s1"]),
            party("p2", "sip:4711@pbx.example", Some("Doe, Jane"), &["s2"]),
        ],
        vec![stream("s1", "1"), stream("s2", "2")],
    )
}

#[test]
fn extension_is_the_agent_on_channel_zero_and_the_caller_the_customer() {
    let call = Call::new(&["1", "2"]).invite(two_party()).header("X-Ucid", "a").header("X-Ucid", "b");
    let m = call.map();
    let info = &m.info;
    assert_eq!(
        m.layout.channels,
        vec![OutChannel { sources: vec![src(1, 0, None)] }, OutChannel { sources: vec![src(0, 0, None)] }]
    );
    assert_eq!(info["sessionId"], "rs-1@sbc");
    assert_eq!(info["masterCallId"], "orig-call@sbc");
    assert_eq!(info["startTime"], "2025-11-24T16:00:00.123Z");
    assert_eq!(info["endTime"], "2025-11-24T16:01:00.623Z");
    assert_eq!(info["direction"], "Unknown", "nothing says who called");
    assert_eq!(info["audio"]["format"], "wav");
    assert_eq!(
        info["contacts"],
        json!([
            { "type": "agent", "channel": 0, "phoneNumber": "4711", "referenceId": "4711", "firstName": "Jane", "lastName": "Doe" },
            { "type": "customer", "channel": 1, "phoneNumber": "+15551234567", "firstName": "Pat", "lastName": "Caller" },
        ])
    );
    assert_eq!(info["metaData"]["sipHeaders"]["X-Ucid"], json!(["a", "b"]));
    assert_eq!(info["metaData"]["participants"][0]["rule"], "other-party");
    assert_eq!(info["metaData"]["participants"][1]["rule"], "extension");
    assert_eq!(info["metaData"]["mapping"]["masterCallIdSource"], "sip-session-id");
    assert_eq!(info["metaData"]["gateway"]["streams"][1]["channels"], json!([0]));
    assert_eq!(info["metaData"]["src"]["from"], "<sip:src@sbc.example>;tag=1");
    assert_eq!(info["metaData"]["metadataHistory"][0]["via"], "INVITE");
}

#[test]
fn broadworks_orig_call_is_outbound_with_the_user_id_agent() {
    let mut md = complete(
        vec![
            party("u1", "sip:8638254725", None, &["st1"]),
            party("u2", "sip:+19015783200@broadcore.com;user=phone", None, &["st2"]),
        ],
        vec![stream("st1", "1"), stream("st2", "2")],
    );
    md.group_id = Some("urn:uuid:group".into());
    md.vendor = VendorHints {
        call_ids: vec![("broadworks:extTrackingID".into(), "tracking-42".into())],
        recorded_user: Some("8638254725@broadcore.com".into()),
        recorded_user_originated: Some(true),
        called: Some("sip:+19015783200@broadcore.com".into()),
        ..VendorHints::default()
    };
    let call = Call::new(&["1", "2"]).invite(md);
    let info = call.map().info;
    assert_eq!(info["direction"], "Outbound");
    assert_eq!(info["masterCallId"], "tracking-42");
    assert_eq!(info["contacts"][0]["type"], "agent");
    assert_eq!(info["contacts"][0]["referenceId"], "8638254725@broadcore.com");
    assert_eq!(info["contacts"][0]["phoneNumber"], "8638254725");
    assert_eq!(info["contacts"][1]["phoneNumber"], "+19015783200");
    assert!(info.get("numberDialed").is_none(), "outbound calls have no numberDialed");
    assert_eq!(info["metaData"]["participants"][0]["rule"], "recorded-user");
    assert_eq!(
        agent_identifiers(&call.summary()),
        ["8638254725@broadcore.com", "8638254725", "sip:8638254725"].map(String::from)
    );
}

#[test]
fn oracle_calling_party_from_an_external_realm_is_an_inbound_customer() {
    let mut md = complete(
        vec![
            party("o1", "sip:+15551230000@carrier.example", None, &["a"]),
            party("o2", "sip:+15559870000@10.0.0.5", Some("Sam Agent"), &["b"]),
        ],
        vec![stream("a", "16777227"), stream("b", "16777228")],
    );
    md.extensions = vec![
        Extension {
            vendor: "oracle".into(),
            parent: Some("o1".into()),
            data: json!({ "callingParty": "true", "realm": "carrier-in" }),
        },
        Extension { vendor: "oracle".into(), parent: Some("o2".into()), data: json!({ "callingParty": "false" }) },
    ];
    md.vendor = VendorHints {
        call_ids: vec![("oracle:ucid".into(), "00473539660FF5A7".into())],
        dialed: Some("sip:record=X@10.1.1.1;calluuid=01PEP;dnis=8663738232;ani=6325883654".into()),
        ..VendorHints::default()
    };
    let mut call = Call::new(&["16777227", "16777228"]).invite(md);
    call.rules.external_realms = vec!["carrier-in".into()];
    let info = call.map().info;
    assert_eq!(info["direction"], "Inbound");
    assert_eq!(info["numberDialed"], "8663738232", "the Genesys record URI's dnis");
    assert_eq!(info["masterCallId"], "00473539660FF5A7");
    assert_eq!(info["contacts"][0]["phoneNumber"], "+15559870000");
    assert_eq!(info["contacts"][1]["phoneNumber"], "+15551230000");
    let ps = &info["metaData"]["participants"];
    assert_eq!((ps[0]["rule"].as_str(), ps[0]["realm"].as_str()), (Some("realm"), Some("carrier-in")));
    assert_eq!(ps[1]["rule"], "other-party");
    assert_eq!(info["metaData"]["vendorData"][0]["vendor"], "oracle");
    assert_eq!(info["metaData"]["mapping"]["direction"], "vendor: Oracle callingParty");
}

#[test]
fn metaswitch_single_mixed_stream_is_mono_with_one_contact() {
    let mut md = complete(
        vec![
            party("m1", "7602922411", Some("7602922411"), &["x"]),
            party("m2", "7602922410", Some("7602922410"), &["x"]),
        ],
        vec![stream("x", "1")],
    );
    md.vendor = VendorHints {
        recorded_user: Some("+17602922410".into()),
        recorded_user_originated: Some(false),
        calling: Some("7602922411".into()),
        dialed: Some("17602922410".into()),
        ..VendorHints::default()
    };
    let call = Call::new(&["1"]).invite(md);
    let m = call.map();
    assert_eq!(m.layout.channels, vec![OutChannel { sources: vec![src(0, 0, None)] }]);
    let info = &m.info;
    assert_eq!(
        info["contacts"],
        json!([{ "type": "agent", "channel": 0, "phoneNumber": "7602922410", "referenceId": "+17602922410" }]),
        "the vendor's user id is the reference; a name without letters is no name"
    );
    assert_eq!(info["direction"], "Inbound");
    assert!(info.get("numberDialed").is_none(), "dialed the recorded user's own number: DID to a station");
    assert!(notes(&m).contains("DID to a station"), "{}", notes(&m));
    let customer = &info["metaData"]["participants"][0];
    assert_eq!(
        (customer["side"].as_str(), customer["channel"].as_u64(), customer["contact"].as_bool()),
        (Some("customer"), Some(0), Some(false))
    );
}

#[test]
fn ribbon_bye_partial_with_disassociate_time_ends_the_spans() {
    let mut md = complete(
        vec![
            party("r1", "2249888500@172.16.198.55", Some("Extension 8500"), &["sB"]),
            party("r2", "2249888012@172.16.195.72", Some(" "), &["sA"]),
        ],
        vec![stream("sA", "1"), stream("sB", "2")],
    );
    md.vendor = VendorHints {
        call_ids: vec![("ribbon:gcid".into(), "241205267".into())],
        calling: Some("\"Extension 8500\" <sip:2249888500@172.16.198.55>;tag=x".into()),
        called: Some("<sip:2249888012@172.16.195.72>;tag=y".into()),
        ..VendorHints::default()
    };
    let leave = |id: &str| MdParticipant { id: id.into(), disassociated: Some(at(58_000)), ..MdParticipant::default() };
    let mut call =
        Call::new(&["1", "2"]).invite(md).update(60_000, "BYE", partial(vec![leave("r1"), leave("r2")], vec![]));
    call.rules.internal_numbers = vec!["2249888500-2249888599".into()];
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, Some(58_000))]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, Some(58_000))]);
    let info = &m.info;
    assert_eq!(info["direction"], "Outbound", "the internal caller called out");
    assert_eq!(info["masterCallId"], "241205267");
    assert_eq!(info["metaData"]["participants"][0]["leftMs"], 58_000);
    assert_eq!(info["metaData"]["metadataHistory"][1]["changes"][0], json!({ "event": "left", "participant": "r1" }));
    assert_eq!(info["contacts"][0]["firstName"], "Extension");
    assert!(info["contacts"][1].get("firstName").is_none(), "a blank name is no name");
}

#[test]
fn a_metadata_time_far_from_its_arrival_is_not_believed() {
    let leave = MdParticipant {
        id: "p1".into(),
        disassociated: Some("1970-05-13T03:29:05Z".parse().unwrap()),
        ..MdParticipant::default()
    };
    let call = Call::new(&["1", "2"]).invite(two_party()).update(50_000, "BYE", partial(vec![leave], vec![]));
    let m = call.map();
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, Some(50_000))], "the change takes effect on arrival");
    assert!(notes(&m).contains("SRC's clock"), "{}", notes(&m));
}

#[test]
fn hold_by_an_empty_send_leaves_a_gap_in_the_agent_channel() {
    // A participantstreamassoc with only <recv>: the streams are given, and it sends none.
    let hold =
        MdParticipant { id: "p2".into(), receives: vec!["s1".into()], streams_given: true, ..MdParticipant::default() };
    let resume = MdParticipant {
        id: "p2".into(),
        sends: vec!["s2".into()],
        receives: vec!["s1".into()],
        streams_given: true,
        ..MdParticipant::default()
    };
    let call = Call::new(&["1", "2"])
        .invite(two_party())
        .update(10_000, "re-INVITE", partial(vec![hold], vec![]))
        .update(20_000, "UPDATE", partial(vec![resume], vec![]));
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, Some(10_000)), src(1, 20_000, None)]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, None)]);
    let history = &m.info["metaData"]["metadataHistory"];
    assert_eq!(history[1]["changes"], json!([{ "event": "hold", "participant": "p2" }]));
    assert_eq!(history[2]["changes"], json!([{ "event": "resumed", "participant": "p2" }]));
    assert_eq!(history[2]["dataMode"], "partial");
}

#[test]
fn supervisor_barge_in_mixes_two_streams_on_the_agent_side() {
    let supervisor = party("p3", "sip:4712@pbx.example", Some("Sue Pervisor"), &["s3"]);
    let call = Call::new(&["1", "2", "3"]).invite(two_party()).update(
        30_000,
        "UPDATE",
        partial(vec![supervisor], vec![stream("s3", "3")]),
    );
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, None), src(2, 30_000, None)]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, None)]);
    let info = &m.info;
    assert_eq!(info["contacts"][0]["phoneNumber"], "4711", "the agent who spoke longest keeps the contact");
    let sup = &info["metaData"]["participants"][2];
    assert_eq!(
        (sup["side"].as_str(), sup["channel"].as_u64(), sup["contact"].as_bool(), sup["joinedMs"].as_u64()),
        (Some("agent"), Some(0), Some(false), Some(30_000))
    );
    assert_eq!(info["metaData"]["metadataHistory"][1]["changes"][0], json!({ "event": "joined", "participant": "p3" }));
}

#[test]
fn transfer_by_complete_update_moves_the_stream_to_the_new_agent() {
    let after = complete(
        vec![
            party("p1", "sip:+15551234567@carrier.example", None, &["s1"]),
            party("p4", "sip:4800@pbx.example", Some("Tom New"), &["s2b"]),
        ],
        vec![stream("s1", "1"), stream("s2b", "2")],
    );
    let call = Call::new(&["1", "2"]).invite(two_party()).update(40_000, "re-INVITE", after);
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, None)], "one agent after the other: continuous");
    let info = &m.info;
    assert_eq!(info["contacts"][0]["phoneNumber"], "4711", "40 s against 20.5 s");
    let changes = &info["metaData"]["metadataHistory"][1]["changes"];
    assert!(
        changes
            .as_array()
            .unwrap()
            .contains(&json!({ "event": "stream-moved", "label": "2", "from": "p2", "to": "p4" })),
        "{changes}"
    );
    assert!(
        changes
            .as_array()
            .unwrap()
            .contains(&json!({ "event": "left", "participant": "p2", "why": "no longer listed" })),
        "{changes}"
    );
}

#[test]
fn cisco_recording_participant_headers_name_the_parties_without_metadata() {
    let mut call = Call::new(&["a", "b"])
        .header("X-Cisco-Recording-Participant", "sip:2164485925@ccf.org;media-index=\"0\"")
        .header("X-Cisco-Recording-Participant", "sip:20053@10.144.106.41;media-index=\"1\"");
    call.changes.push(MetadataChange { at_ms: 0, via: "INVITE", outcome: MetadataOutcome::Absent });
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, None)]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, None)]);
    assert_eq!(m.info["contacts"][0]["phoneNumber"], "20053");
    assert_eq!(m.info["contacts"][1]["phoneNumber"], "2164485925");
    assert_eq!(m.info["masterCallId"], "rs-1@sbc");
    assert!(notes(&m).contains("X-Cisco-Recording-Participant"));
    assert_eq!(m.info["metaData"]["gateway"]["metadata"], "absent");
}

#[test]
fn when_no_rule_tells_the_sides_apart_the_first_participant_is_a_guessed_agent() {
    let md = complete(
        vec![
            party("a", "sip:+15550001111@x.example", None, &["s1"]),
            party("b", "sip:+15550002222@y.example", None, &["s2"]),
        ],
        vec![stream("s1", "1"), stream("s2", "2")],
    );
    let m = Call::new(&["1", "2"]).invite(md).map();
    assert_eq!(m.info["direction"], "Unknown");
    assert_eq!(m.info["contacts"][0]["phoneNumber"], "+15550001111");
    assert_eq!(m.info["metaData"]["participants"][0]["rule"], "guess");
    assert!(notes(&m).contains("a guess"), "{}", notes(&m));
}

#[test]
fn both_parties_internal_is_an_internal_call_on_two_channels() {
    let mut md = complete(
        vec![
            party("c", "sip:9000@192.168.50.102", Some("9000"), &["q"]),
            party("d", "sip:1002@192.168.50.10", None, &["l"]),
        ],
        vec![stream("q", "16777227"), stream("l", "16777228")],
    );
    md.extensions =
        vec![Extension { vendor: "oracle".into(), parent: Some("c".into()), data: json!({ "callingParty": "true" }) }];
    let m = Call::new(&["16777227", "16777228"]).invite(md).map();
    assert_eq!(m.info["direction"], "Internal");
    assert_eq!(m.info["contacts"][0]["phoneNumber"], "9000", "the caller stays the agent");
    assert_eq!(m.info["contacts"][1]["phoneNumber"], "1002");
    assert_eq!(m.info["metaData"]["participants"][1]["rule"], "internal-call");
}

#[test]
fn no_metadata_puts_the_first_stream_on_the_agent_channel() {
    let mut call = Call::new(&["1", "2"]);
    call.changes.push(MetadataChange {
        at_ms: 0,
        via: "INVITE",
        outcome: MetadataOutcome::Invalid { error: "bad xml".into(), raw: "<x".into() },
    });
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(0, 0, None)]);
    assert_eq!(m.layout.channels[1].sources, vec![src(1, 0, None)]);
    assert_eq!(m.info["contacts"], json!([{ "type": "agent", "channel": 0 }, { "type": "customer", "channel": 1 }]));
    assert_eq!(m.info["masterCallId"], "rs-1@sbc");
    assert_eq!(m.info["metaData"]["gateway"]["metadataError"], "bad xml");
    assert_eq!(m.info["metaData"]["metadataHistory"][0]["metadata"], "invalid");
    assert!(agent_identifiers(&call.summary()).is_empty());
}

#[test]
fn an_inactive_stream_that_never_carried_audio_makes_no_channel() {
    let mut call = Call::new(&["1", "2", "3"]).invite(two_party());
    call.streams[2] =
        ChannelSummary { label: Some("3".into()), codec: "PCMU", stats: StreamStats::default(), active: false, media: Default::default() };
    call.layout = LayoutKind::PerStream;
    let m = call.map();
    assert_eq!(
        m.layout.channels,
        vec![OutChannel { sources: vec![src(0, 0, None)] }, OutChannel { sources: vec![src(1, 0, None)] }]
    );
    assert_eq!(
        m.info["contacts"][0],
        json!({ "type": "customer", "channel": 0, "phoneNumber": "+15551234567", "firstName": "Pat", "lastName": "Caller" })
    );
    assert_eq!(m.info["contacts"][1]["type"], "agent");
    assert_eq!(m.info["metaData"]["gateway"]["streams"][2]["inactive"], true);
    assert!(notes(&m).contains("a guess") || notes(&m).contains("inactive"), "{}", notes(&m));
}

#[test]
fn metadata_and_sdp_disagreements_are_warned() {
    let mut call = Call::new(&["1", "9"]).invite(two_party());
    call.streams.push(ChannelSummary { label: None, codec: "PCMA", stats: StreamStats::default(), active: true, media: Default::default() });
    let m = call.map();
    let w = m.info["metaData"]["mapping"]["warnings"].to_string();
    for expected in
        ["label 2 has no recorded m-line", "(a=label 9) is not described", "recorded stream 2 has no a=label"]
    {
        assert!(w.contains(expected), "missing {expected:?} in {w}");
    }
}

#[test]
fn participants_without_stream_associations_are_paired_with_streams_in_order() {
    let md = complete(vec![party("a", "sip:+15550001111@x", None, &[]), party("b", "sip:204@pbx", None, &[])], vec![]);
    let m = Call::new(&["0", "1"]).invite(md).map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, None)], "204 is the agent");
    assert!(notes(&m).contains("paired with the streams in order"));
}

#[test]
fn master_call_id_follows_the_configured_sources() {
    let mut call = Call::new(&["1", "2"])
        .invite(two_party())
        .header("X-Genesys-CallUUID", "GEN-1")
        .header("User-to-User", "04FA080047353A660FF5A7C8143030303731313336323631373132333231393539;encoding=hex");
    assert_eq!(call.map().info["masterCallId"], "00071136261712321959", "UCID from User-to-User, decimal");
    call.rules.master_call_id = vec![IdSource::Header("x-genesys-calluuid".into()), IdSource::SessionId];
    let m = call.map();
    assert_eq!(m.info["masterCallId"], "GEN-1");
    assert_eq!(m.info["metaData"]["mapping"]["masterCallIdSource"], "header:x-genesys-calluuid");
    call.rules.master_call_id = vec![IdSource::Group];
    assert!(call.map().info.get("masterCallId").is_none(), "no source has a value");
}

#[test]
fn mapping_rules_parse_from_toml_with_documented_defaults() {
    #[derive(Deserialize)]
    struct Doc {
        mapping: MappingRules,
    }
    let doc: Doc = toml::from_str("[mapping]\n").unwrap();
    assert_eq!(doc.mapping, MappingRules::default());
    doc.mapping.validate().unwrap();
    let text = r#"[mapping]
agent_rules = ["number", "extension"]
internal_extension_digits = [3, 5]
internal_domains = [".corp.example", "10.0.0.5"]
internal_numbers = ["+1555012", "4000-4999"]
external_realms = ["carrier-in"]
master_call_id = ["vendor:ribbon:gcid", "header:X-Genesys-CallUUID", "session-id"]
number_dialed = ["header:X-DNIS", "request-uri"]
reference_id = ["aor"]
first_participant_is_caller = true
metadata_times = false
"#;
    let r = toml::from_str::<Doc>(text).unwrap().mapping;
    r.validate().unwrap();
    assert_eq!(r.master_call_id[0], IdSource::VendorNamed("ribbon:gcid".into()));
    assert!(r.is_extension("123") && !r.is_extension("12") && !r.is_extension("+123"));
    assert!(r.is_internal_number("+15550123456") && r.is_internal_number("4711") && !r.is_internal_number("5000"));
    assert!(
        r.is_internal_domain("pbx.corp.example")
            && r.is_internal_domain("CORP.example")
            && r.is_internal_domain("10.0.0.5")
    );
    assert!(!r.is_internal_domain("corp.example.evil"));
    for bad in [
        "[mapping]\nunknown = 1\n",
        "[mapping]\nmaster_call_id = [\"ucid\"]\n",
        "[mapping]\nagent_rules = [\"vip\"]\n",
        "[mapping]\nnumber_dialed = [\"header:\"]\n",
    ] {
        assert!(toml::from_str::<Doc>(bad).is_err(), "{bad}");
    }
    let invalid = |f: fn(&mut MappingRules)| {
        let mut r = MappingRules::default();
        f(&mut r);
        r.validate().unwrap_err()
    };
    assert!(invalid(|r| r.internal_extension_digits = [6, 2]).contains("internal_extension_digits"));
    assert!(invalid(|r| r.master_call_id.clear()).contains("master_call_id"));
    assert!(invalid(|r| r.internal_numbers = vec!["4999-4000".into()]).contains("internal_numbers"));
    assert!(invalid(|r| r.agent_rules = vec![AgentRule::Realm, AgentRule::Realm]).contains("twice"));
    assert!(
        invalid(|r| (r.internal_realms, r.external_realms) = (vec!["x".into()], vec!["x".into()])).contains("both")
    );
}

#[test]
fn identities_compare_across_forms() {
    use identity::same_party;
    assert!(same_party("+17602922410", "7602922410"));
    assert!(same_party("8638254725@broadcore.com", "sip:8638254725"));
    assert!(same_party("\"Ext\" <sip:2249888500@h.example>;tag=1", "2249888500@h.example"));
    assert!(!same_party("sip:alice@a.example", "sip:alice@b.example"));
    assert!(!same_party("4711", "14711"), "short numbers must match exactly");
    assert_eq!(ids::uui_ucid("00FA08000100020000000A"), Some("00001000020000000010".into()));
    assert_eq!(ids::uui_ucid("zz"), None);
}

#[test]
fn phone_numbers_and_names() {
    assert_eq!(phone_number("sip:+1 (555) 123-4567@x;user=phone").as_deref(), Some("+15551234567"));
    assert_eq!(phone_number("tel:+44-20-7946-0000").as_deref(), Some("+442079460000"));
    assert_eq!(phone_number("sips:4711@pbx").as_deref(), Some("4711"));
    assert_eq!(phone_number("\"Ann\" <sip:4711@pbx>;tag=9").as_deref(), Some("4711"));
    assert_eq!(phone_number("sip:alice@example.com"), None);
    assert_eq!(split_name("Mary Ann Smith"), (Some("Mary Ann".into()), Some("Smith".into())));
    assert_eq!(split_name("Agent"), (Some("Agent".into()), None));
    assert_eq!(split_name("  "), (None, None));
    assert_eq!(split_name("7602922410"), (None, None));
    assert_eq!(split_name("tester;lang=en-US;id=41"), (Some("tester".into()), None));
}

#[test]
fn a_vendor_ucid_in_uui_hex_form_is_shown_as_its_digits() {
    let md = Metadata {
        vendor: VendorHints {
            call_ids: vec![("oracle:ucid".into(), "00FA08000100020000000A".into())],
            ..Default::default()
        },
        ..Metadata::default()
    };
    let got = ids::master_call_id(&MappingRules::default().master_call_id, &[&md], &[], "s");
    assert_eq!(got, Some(("00001000020000000010".into(), "vendor".into())));
    let other = Metadata {
        vendor: VendorHints {
            call_ids: vec![("ribbon:gcid".into(), "00FA08000100020000000A".into())],
            ..Default::default()
        },
        ..Metadata::default()
    };
    let got = ids::master_call_id(&MappingRules::default().master_call_id, &[&other], &[], "s");
    assert_eq!(got.map(|g| g.0).as_deref(), Some("00FA08000100020000000A"), "only UCIDs are decoded");
}

#[test]
fn an_rfc7865_document_parsed_from_xml_maps_end_to_end() {
    let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="grp-1"/>
  <session session_id="sess-1"><sipSessionID>abc;remote=def</sipSessionID><group-ref>grp-1</group-ref></session>
  <participant participant_id="pA"><nameID aor="sip:+4930123456@carrier.example"><name>Erika Muster</name></nameID></participant>
  <participant participant_id="pB"><nameID aor="sip:2001@cube.example"/></participant>
  <stream stream_id="sA" session_id="sess-1"><label>1</label></stream>
  <stream stream_id="sB" session_id="sess-1"><label>2</label></stream>
  <participantstreamassoc participant_id="pA"><send>sA</send><recv>sB</recv></participantstreamassoc>
  <participantstreamassoc participant_id="pB"><send>sB</send><recv>sA</recv></participantstreamassoc>
</recording>"#;
    let md = crate::siprec::metadata::parse_metadata(xml.as_bytes()).unwrap();
    let m = Call::new(&["1", "2"]).invite(md).map();
    assert_eq!(m.info["masterCallId"], "grp-1");
    assert_eq!(
        m.info["contacts"][0],
        json!({ "type": "agent", "channel": 0, "phoneNumber": "2001", "referenceId": "2001" })
    );
    assert_eq!(m.info["contacts"][1]["lastName"], "Muster");
    assert_eq!(m.info["metaData"]["recordedCall"]["sipSessionIds"], json!(["abc;remote=def"]));
}

fn parse(xml: &str) -> Metadata {
    crate::siprec::metadata::parse_metadata(xml.as_bytes()).unwrap()
}

#[test]
fn ribbon_documents_parsed_from_xml_end_the_spans_at_the_bye_disassociate_time() {
    let invite = parse(
        r#"<tns:recording xmlns:tns='urn:ietf:params:xml:ns:recording'>
  <tns:datamode>complete</tns:datamode>
  <tns:group group_id="G1">
    <callData xmlns='urn:ietf:params:xml:ns:callData'>
      <fromhdr>"Extension 8500" &lt;sip:2249888500@172.16.198.55&gt;;tag=Se</fromhdr>
      <tohdr>&lt;sip:2249888012@172.16.195.72&gt;;tag=gK</tohdr>
      <callid>2da553f7</callid><gcid>241205267</gcid>
    </callData>
  </tns:group>
  <tns:session session_id="S1"><tns:group-ref>G1</tns:group-ref></tns:session>
  <tns:participant participant_id="P1"><tns:nameID aor="2249888500@172.16.198.55"><tns:name>Extension 8500</tns:name></tns:nameID></tns:participant>
  <tns:participant participant_id="P2"><tns:nameID aor="2249888012@172.16.195.72"><tns:name> </tns:name></tns:nameID></tns:participant>
  <tns:stream stream_id="A" session_id="S1"><tns:label>1</tns:label></tns:stream>
  <tns:stream stream_id="B" session_id="S1"><tns:label>2</tns:label></tns:stream>
  <tns:participantstreamassoc participant_id="P1"><tns:send>B</tns:send><tns:recv>A</tns:recv></tns:participantstreamassoc>
  <tns:participantstreamassoc participant_id="P2"><tns:send>A</tns:send><tns:recv>B</tns:recv></tns:participantstreamassoc>
</tns:recording>"#,
    );
    let bye = parse(&format!(
        r#"<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <datamode>Partial</datamode>
  <session session_id="S1"></session>
  <participant participant_id="P1" session_id="S1"><disassociate-time>{t}</disassociate-time></participant>
  <participant participant_id="P2" session_id="S1"><disassociate-time>{t}</disassociate-time></participant>
</recording>"#,
        t = at(59_000)
    ));
    let mut call = Call::new(&["1", "2"]).invite(invite).update(60_000, "BYE", bye);
    call.rules.internal_numbers = vec!["2249888500-2249888599".into()];
    let m = call.map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, Some(59_000))]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, Some(59_000))]);
    assert_eq!(m.info["masterCallId"], "241205267");
    assert_eq!(m.info["direction"], "Outbound");
    assert_eq!(m.info["contacts"][0]["phoneNumber"], "2249888500");
}

#[test]
fn broadworks_document_parsed_from_xml_is_a_mono_inbound_call_for_the_user() {
    let md = parse(
        r#"<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
  <dataMode>complete</dataMode>
  <group id="urn:uuid:g1"/>
  <session id="urn:uuid:s1" group="urn:uuid:g1"/>
  <participant id="urn:uuid:p1" session="urn:uuid:s1"><aor>sip:8638254725</aor><send><id>urn:uuid:st1</id></send></participant>
  <participant id="urn:uuid:p2" session="urn:uuid:s1"><aor>sip:+19015783200@broadcore.com;user=phone</aor><send><id>urn:uuid:st2</id></send></participant>
  <stream id="urn:uuid:st1" session="urn:uuid:s1"><label>1</label><mode>mixed</mode></stream>
  <extensiondata id="urn:uuid:e1" parent="urn:uuid:s1">
    <broadWorksRecordingMetadata xmlns="http://schema.broadsoft.com/broadworksCallRecording" version="3.0">
      <extTrackingID>tracking-7</extTrackingID>
      <userID>8638254725@broadcore.com</userID>
      <callType><termCall>
        <callingPartyNumber>sip:+19015783200@broadcore.com;user=phone</callingPartyNumber>
        <calledPartyNumber>sip:+18005550199@broadcore.com</calledPartyNumber>
      </termCall></callType>
    </broadWorksRecordingMetadata>
  </extensiondata>
</recording_metadata>"#,
    );
    let m = Call::new(&["1"]).invite(md).map();
    assert_eq!(m.layout.channels.len(), 1);
    assert_eq!(m.info["direction"], "Inbound");
    assert_eq!(m.info["masterCallId"], "tracking-7");
    assert_eq!(m.info["numberDialed"], "+18005550199");
    assert_eq!(
        m.info["contacts"],
        json!([{ "type": "agent", "channel": 0, "phoneNumber": "8638254725", "referenceId": "8638254725@broadcore.com" }])
    );
}

#[test]
fn a_stream_both_sides_send_at_once_stays_on_the_agent_channel() {
    let md = complete(
        vec![
            party("p1", "sip:+15551234567@carrier.example", None, &["s1", "s2"]),
            party("p2", "sip:4711@pbx.example", None, &["s2"]),
        ],
        vec![stream("s1", "1"), stream("s2", "2")],
    );
    let m = Call::new(&["1", "2"]).invite(md).map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, None)]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, None)], "not heard twice");
    assert!(notes(&m).contains("sent by both sides at once"), "{}", notes(&m));
}

#[test]
fn a_stream_moved_to_the_other_side_follows_it() {
    // Label 2 carries the agent until 25 s, then (a consult call) the customer's new leg.
    let moved = MdParticipant {
        id: "p1".into(),
        sends: vec!["s1".into(), "s2".into()],
        streams_given: true,
        ..MdParticipant::default()
    };
    let away = MdParticipant { id: "p2".into(), streams_given: true, ..MdParticipant::default() };
    let m =
        Call::new(&["1", "2"]).invite(two_party()).update(25_000, "UPDATE", partial(vec![moved, away], vec![])).map();
    assert_eq!(m.layout.channels[0].sources, vec![src(1, 0, Some(25_000))]);
    assert_eq!(m.layout.channels[1].sources, vec![src(0, 0, None), src(1, 25_000, None)]);
    let changes = &m.info["metaData"]["metadataHistory"][1]["changes"];
    assert!(
        changes
            .as_array()
            .unwrap()
            .contains(&json!({ "event": "stream-moved", "label": "2", "from": "p2", "to": "p1" })),
        "{changes}"
    );
}
