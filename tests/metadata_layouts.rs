//! Every recording-metadata layout in `tests/fixtures/metadata/` parsed into the normalized
//! model: participants with AOR and name, streams with labels, who sends what, session SIP
//! ids, group id, vendor hints, extensions, and the warnings left for what was repaired.
//! The partial-update fixtures are merged onto the document they follow.
//!
//! Fixture format (see the README there): `Content-Type: ...` (and optionally the SIP
//! `Content-Length: ...` the SRC declared), an empty line, then the body exactly as sent.

use std::path::PathBuf;

use siprec_gateway::siprec::metadata::{DataMode, Metadata};
use siprec_gateway::siprec::{MetadataOutcome, OfferLimits, metadata_update, parse_offer};

struct Fixture {
    content_type: String,
    declared_length: Option<usize>,
    body: Vec<u8>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metadata")
}

fn load(name: &str) -> Fixture {
    let bytes = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{name}: no blank line after the header lines"));
    let head = std::str::from_utf8(&bytes[..split]).unwrap();
    let mut fixture = Fixture {
        content_type: String::new(),
        declared_length: None,
        body: bytes[split + 2..].to_vec(),
    };
    for line in head.lines() {
        let (name, value) = line.split_once(':').unwrap();
        match name {
            "Content-Type" => fixture.content_type = value.trim().to_owned(),
            "Content-Length" => fixture.declared_length = Some(value.trim().parse().unwrap()),
            other => panic!("unknown fixture header {other}"),
        }
    }
    fixture
}

/// The metadata of an INVITE body, which must parse.
fn offer(name: &str) -> Metadata {
    let f = load(name);
    let offer = parse_offer(Some(&f.content_type), &f.body, &OfferLimits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    match offer.metadata {
        MetadataOutcome::Parsed(md) => *md,
        other => panic!("{name}: {other:?}"),
    }
}

/// The metadata of an in-dialog request body (re-INVITE, UPDATE, BYE), which must parse.
fn update(name: &str) -> Metadata {
    let f = load(name);
    match metadata_update(Some(&f.content_type), &f.body, &OfferLimits::default()) {
        MetadataOutcome::Parsed(md) => *md,
        other => panic!("{name}: {other:?}"),
    }
}

/// (label, aor of every sender) for each stream, in stream order.
fn senders(md: &Metadata) -> Vec<(String, Vec<String>)> {
    md.streams
        .iter()
        .map(|s| {
            let label = s.label.clone().unwrap_or_default();
            let who = md
                .participants_sending_label(&label)
                .map(|p| p.aor.clone().unwrap_or_else(|| p.id.clone()))
                .collect();
            (label, who)
        })
        .collect()
}

fn pairs(items: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    items
        .iter()
        .map(|(l, who)| {
            (
                (*l).to_owned(),
                who.iter().map(|w| (*w).to_owned()).collect(),
            )
        })
        .collect()
}

fn ids(md: &Metadata) -> Vec<(&str, &str)> {
    md.vendor
        .call_ids
        .iter()
        .map(|(s, v)| (s.as_str(), v.as_str()))
        .collect()
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn assert_no_warnings(md: &Metadata) {
    assert!(md.warnings.is_empty(), "{:?}", md.warnings);
}

#[test]
fn rfc7865_complete_with_every_association() {
    let md = offer("rfc7865-complete.body");
    assert_eq!(md.data_mode, DataMode::Complete);
    assert_eq!(md.group_id.as_deref(), Some("grp-7865-a1"));
    assert_eq!(
        md.sip_session_id(),
        Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9;remote=ffeeddccbbaa99887766554433221100")
    );
    assert_eq!(md.sessions[0].group_ref.as_deref(), Some("grp-7865-a1"));
    assert_eq!(md.sessions[0].start, Some(ts("2026-03-02T14:00:00Z")));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:+15550142@carrier.example.net"]),
            ("2", &["sip:2101@pbx.example.com"])
        ])
    );
    let agent = md.participant("par-agent").unwrap();
    assert_eq!(agent.name.as_deref(), Some("Morgan Agent"));
    assert_eq!(agent.session_ref.as_deref(), Some("ses-7865-b2"));
    assert_eq!(agent.associated, Some(ts("2026-03-02T14:00:01Z")));
    assert_eq!(agent.receives, ["str-cust"]);
    assert_eq!(md.extensions.len(), 1);
    assert_eq!(md.extensions[0].vendor, "callcenter");
    assert_eq!(md.extensions[0].parent.as_deref(), Some("grp-7865-a1"));
    assert_eq!(
        md.extensions[0].data,
        serde_json::json!({"call-center": {"supervisor": "sip:lead@cc.example.com"}})
    );
    assert_eq!(md.vendor, Default::default());
    assert_no_warnings(&md);
}

#[test]
fn rfc7865_partial_updates_hold_join_leave_and_move_a_stream() {
    let mut md = offer("rfc7865-complete.body");

    let hold = update("rfc7865-update-hold.body");
    assert_eq!(hold.data_mode, DataMode::Partial);
    md.merge(&hold);
    assert_eq!(
        senders(&md),
        pairs(&[("1", &[]), ("2", &["sip:2101@pbx.example.com"])])
    );
    assert_eq!(md.participant("par-cust").unwrap().receives, ["str-agent"]);

    md.merge(&update("rfc7865-update-joins.body"));
    let sup = md.participant("par-super").unwrap();
    assert_eq!(sup.name.as_deref(), Some("Sam Supervisor"));
    assert_eq!(sup.associated, Some(ts("2026-03-02T14:03:00Z")));
    assert_eq!(md.participant_sending_label("3").unwrap().id, "par-super");

    md.merge(&update("rfc7865-update-leaves.body"));
    let sup = md.participant("par-super").unwrap();
    assert_eq!(sup.disassociated, Some(ts("2026-03-02T14:05:30Z")));
    assert_eq!(
        sup.sends,
        ["str-super"],
        "a participant that leaves is marked, not forgotten"
    );

    md.merge(&update("rfc7865-update-stream-moves.body"));
    assert_eq!(md.participant_sending_label("2").unwrap().id, "par-agent2");
    let first = md.participant("par-agent").unwrap();
    assert!(first.sends.is_empty());
    assert_eq!(first.disassociated, Some(ts("2026-03-02T14:06:00Z")));
    assert_eq!(md.participants.len(), 4);
    assert_eq!(md.group_id.as_deref(), Some("grp-7865-a1"));
    assert_eq!(md.data_mode, DataMode::Complete);
    assert_no_warnings(&md);
}

#[test]
fn opensips_without_associations_lists_parties_and_streams_only() {
    let md = offer("opensips-minimal.body");
    assert_eq!(
        md.sip_session_id(),
        Some("5e1f0c2d9b8a7f6e5d4c3b2a19081726@198.51.100.7")
    );
    let aors: Vec<_> = md.participants.iter().map(|p| p.aor.as_deref()).collect();
    assert_eq!(
        aors,
        [
            Some("sip:0700111222@198.51.100.7"),
            Some("sip:@tenant.example.org")
        ]
    );
    assert_eq!(
        md.participants[0].name.as_deref(),
        Some("tester;lang=en-US;id=41")
    );
    assert!(
        md.participants
            .iter()
            .all(|p| !p.streams_given && p.sends.is_empty())
    );
    assert_eq!(senders(&md), pairs(&[("1", &[]), ("2", &[])]));
    assert_no_warnings(&md);
}

#[test]
fn opensips_without_streams_reads_offsets_without_colon() {
    let md = offer("opensips-no-streams.body");
    assert!(md.streams.is_empty());
    assert_eq!(md.sessions[0].start, Some(ts("2026-01-15T09:30:00Z")));
    let second = &md.participants[1];
    assert_eq!(second.aor.as_deref(), Some("sip:4711@198.51.100.8"));
    assert_eq!(second.session_ref.as_deref(), Some("T3BlblNJUFMtbm8tc3Ry"));
    assert_eq!(second.associated, Some(ts("2026-01-15T09:30:02Z")));
    assert_no_warnings(&md);
}

#[test]
fn cisco_cube_with_gtd_part() {
    let md = offer("cisco-cube.body");
    assert_eq!(
        md.sip_session_id(),
        Some("c0ffee00c0ffee00c0ffee00c0ffee01;remote=facade00facade00facade00facade02")
    );
    assert_eq!(md.sessions[0].start, Some(ts("2026-02-10T08:15:42.25Z")));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:+15550177@192.0.2.20"]),
            ("2", &["sip:3302@192.0.2.20"])
        ])
    );
    assert_eq!(md.participants[0].name, None);
    assert_eq!(md.participants[1].name.as_deref(), Some("3302"));
    assert!(md.extensions.is_empty());
    assert_eq!(md.vendor, Default::default());
    assert_no_warnings(&md);
}

#[test]
fn avaya_sbce_dummy_participant_then_update_names_the_callee() {
    let mut md = offer("avaya-sbce.body");
    assert_eq!(md.data_mode, DataMode::Complete);
    assert_eq!(md.sessions[0].id, "00FA080012345678ABCDEF");
    assert_eq!(md.sessions[0].start, Some(ts("2026-04-01T11:22:33Z")));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("10", &["sip:5550123456@203.0.113.41"]),
            ("20", &["sip:ASBCE@asbce.example.com"])
        ])
    );
    assert_no_warnings(&md);

    md.merge(&update("avaya-sbce-update.body"));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("10", &["sip:5550123456@203.0.113.41"]),
            ("20", &["sip:4402@pbx.example.com"])
        ])
    );
    assert_eq!(
        md.participants.len(),
        2,
        "a complete update replaces the dummy"
    );
}

#[test]
fn oracle_acme_legacy_namespace_with_apkt_extension_data() {
    let md = offer("oracle-acme.body");
    assert_eq!(md.sessions[0].id, "QUNNRS1zZXNzaW9uLTAx");
    assert_eq!(md.sessions[0].start, Some(ts("2026-05-05T14:41:56Z")));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("739440565", &["sip:+15550160@carrier.example.net"]),
            ("739440566", &["sip:+18005550100@cc.example.com"]),
        ])
    );
    let caller = &md.participants[0];
    assert_eq!(caller.session_ref.as_deref(), Some("QUNNRS1zZXNzaW9uLTAx"));
    assert_eq!(caller.associated, Some(ts("2026-05-05T14:41:56Z")));
    assert_eq!(md.streams[1].mode.as_deref(), Some("separate"));
    assert_eq!(md.streams[1].associated, Some(ts("2026-05-05T14:42:04Z")));

    assert_eq!(ids(&md), [("oracle:ucid", "00FA08004762BD69FA4805")]);
    assert_eq!(
        md.vendor.calling.as_deref(),
        Some("sip:+15550160@carrier.example.net")
    );
    assert_eq!(
        md.vendor.called.as_deref(),
        Some("sip:+18005550100@cc.example.com")
    );
    assert_eq!(md.vendor.dialed.as_deref(), Some("8005550100"));
    assert_eq!(
        md.vendor.headers,
        [
            (
                "P-Asserted-Identity".to_owned(),
                "sip:+15550160@carrier.example.net".to_owned()
            ),
            ("P-Asserted-Identity".to_owned(), "tel:+15550160".to_owned()),
            (
                "Call-ID".to_owned(),
                "wlss-0a1b2c3d-4e5f6a7b@198.51.100.22".to_owned()
            ),
        ]
    );
    let vendors: Vec<_> = md
        .extensions
        .iter()
        .map(|e| (e.vendor.as_str(), e.parent.as_deref()))
        .collect();
    assert_eq!(
        vendors,
        [
            ("oracle", Some("QUNNRS1zZXNzaW9uLTAx")),
            ("oracle", Some("QUNNRS1wYXJ0LWNhbGxlcg==")),
            ("oracle", Some("QUNNRS1wYXJ0LWNhbGxlZQ==")),
        ]
    );
    assert_eq!(md.extensions[0].data["callerOrig"], "true");
    assert_eq!(md.extensions[1].data["realm"], "peerCarrierA");
    assert_eq!(
        md.extensions[1].data["header"][0]["@label"],
        "P-Asserted-Identity"
    );
    assert_eq!(
        md.extensions[1].data["header"][0]["value"][1],
        "tel:+15550160"
    );
    assert_no_warnings(&md);
}

#[test]
fn oracle_draft_layout_with_aor_and_name_in_participant() {
    let md = offer("oracle-draft.body");
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:caller@192.0.2.40"]),
            ("2", &["sip:service@192.0.2.41"])
        ])
    );
    assert_eq!(md.participants[0].name.as_deref(), Some("caller"));
    assert_eq!(
        md.participants[0].associated,
        Some(ts("2026-06-27T17:03:57Z"))
    );
    assert_eq!(md.streams[0].associated, Some(ts("2026-06-27T17:03:57Z")));
    assert_eq!(md.sessions[0].start, Some(ts("2026-06-27T17:03:57Z")));
    assert_no_warnings(&md);
}

#[test]
fn oracle_genesys_four_streams_and_pseudo_cdata_request_uri() {
    let md = offer("oracle-genesys.body");
    assert_eq!(md.streams.len(), 4);
    assert_eq!(
        senders(&md),
        pairs(&[
            ("268749245", &["sip:Genesys@192.0.2.60"]),
            ("268749247", &["sip:Genesys@192.0.2.60"]),
            (
                "268749246",
                &["sip:record=00ABCDEFGH0000000001_2026-10-24_15-53-28@127.0.0.1"]
            ),
            (
                "268749248",
                &["sip:record=00ABCDEFGH0000000001_2026-10-24_15-53-28@127.0.0.1"]
            ),
        ])
    );
    assert_eq!(
        ids(&md),
        [
            ("oracle:ucid", "0090D1AD00000001"),
            ("genesys:calluuid", "00ABCDEFGH0000000001")
        ]
    );
    assert_eq!(md.vendor.dialed.as_deref(), Some("8005550199"));
    assert_eq!(md.vendor.calling.as_deref(), Some("sip:Genesys@192.0.2.60"));
    assert_eq!(
        md.vendor.headers,
        [(
            "Call-ID".to_owned(),
            "wlss-00000001-0000-0000-0000-000000000001@192.0.2.60".to_owned()
        )]
    );
    assert_eq!(md.warnings, ["pseudo-CDATA <!{CDATA{...}}> read as CDATA"]);
}

#[test]
fn metaswitch_one_mixed_stream_sent_by_both_parties() {
    let md = offer("metaswitch.body");
    assert_eq!(senders(&md), pairs(&[("1", &["5550100321", "5550100320"])]));
    assert_eq!(md.participants[0].receives, ["TVNXLXN0cm0tMDE="]);
    assert_eq!(md.vendor.recorded_user.as_deref(), Some("+15550100320"));
    assert_eq!(md.vendor.recorded_user_originated, Some(false));
    assert_eq!(md.vendor.calling.as_deref(), Some("5550100321"));
    assert_eq!(md.vendor.dialed.as_deref(), Some("15550100320"));
    assert_eq!(md.extensions.len(), 1);
    assert_eq!(md.extensions[0].vendor, "metaswitch");
    assert_eq!(md.extensions[0].parent, None);
    assert_eq!(
        md.extensions[0].data["metaswitchRecordingMetadata"]["userName"],
        ""
    );
    assert_no_warnings(&md);
}

#[test]
fn ribbon_prefixed_with_call_data_then_bye_partial() {
    let mut md = offer("ribbon-sonus.body");
    assert_eq!(md.group_id.as_deref(), Some("UklCLWdyb3VwLTAx"));
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("UklCLWdyb3VwLTAx")
    );
    assert_eq!(md.sessions[0].start, Some(ts("1970-05-15T00:41:05Z")));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["8005550123@192.0.2.81"]),
            ("2", &["5550108500@192.0.2.80"])
        ])
    );
    assert_eq!(md.participants[0].name.as_deref(), Some("Extension 8500"));
    assert_eq!(md.participants[1].name, None, "a blank name is no name");
    assert_eq!(
        md.vendor.calling.as_deref(),
        Some("sip:5550108500@192.0.2.80")
    );
    assert_eq!(
        md.vendor.called.as_deref(),
        Some("sip:8005550123@192.0.2.81:5060;user=phone")
    );
    assert_eq!(
        ids(&md),
        [
            ("ribbon:gcid", "4990206"),
            ("ribbon:callid", "4990206_132492727@192.0.2.80")
        ]
    );
    assert_eq!(md.extensions[0].vendor, "ribbon");
    assert_eq!(md.extensions[0].parent.as_deref(), Some("UklCLWdyb3VwLTAx"));
    assert_no_warnings(&md);

    let bye = update("ribbon-sonus-bye.body");
    assert_eq!(bye.data_mode, DataMode::Partial);
    md.merge(&bye);
    for p in &md.participants {
        assert_eq!(
            p.disassociated,
            Some(ts("1970-05-15T00:49:15Z")),
            "{}",
            p.id
        );
        assert_eq!(p.sends.len(), 1, "streams kept");
    }
    assert_eq!(md.vendor.call_ids.len(), 2);
}

#[test]
fn broadworks_acd_metadata_first_with_draft_namespace() {
    let md = offer("broadworks-acd.body");
    assert_eq!(
        md.group_id.as_deref(),
        Some("urn:uuid:5a1c0e6e-0000-4000-8000-000000000002")
    );
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("urn:uuid:5a1c0e6e-0000-4000-8000-000000000002")
    );
    assert_eq!(md.sessions[0].start, Some(ts("2026-06-26T17:48:23Z")));
    assert_eq!(md.streams[0].mode.as_deref(), Some("mixed"));
    assert_eq!(
        senders(&md),
        pairs(&[(
            "1",
            &[
                "sip:5550104725",
                "sip:+15550183200@bw.example.com;user=phone"
            ]
        )])
    );
    assert_eq!(
        ids(&md),
        [
            ("broadworks:extTrackingID", "1234567:1"),
            ("broadworks:callID", "callhalf-98765:0")
        ]
    );
    assert_eq!(
        md.vendor.recorded_user.as_deref(),
        Some("5550104725@bw.example.com")
    );
    assert_eq!(md.vendor.recorded_user_originated, Some(false));
    assert_eq!(
        md.vendor.calling.as_deref(),
        Some("sip:+15550183200@bw.example.com;user=phone")
    );
    assert_eq!(
        md.vendor.called.as_deref(),
        Some("sip:+15550104725@bw.example.com")
    );
    // A call distributed by the ACD was dialed to the queue's number, not the agent's.
    assert_eq!(md.vendor.dialed.as_deref(), Some("tel:+15550104220"));
    let ext = &md.extensions[0];
    assert_eq!(ext.vendor, "broadworks");
    assert_eq!(
        ext.parent.as_deref(),
        Some("urn:uuid:5a1c0e6e-0000-4000-8000-000000000003")
    );
    assert_eq!(ext.data["broadWorksRecordingMetadata"]["@version"], "3.0");
    assert_eq!(
        ext.data["broadWorksRecordingMetadata"]["acd"]["acdNumber"]["@countryCode"],
        "1"
    );
    assert_no_warnings(&md);
}

#[test]
fn webex_outbound_then_redirect_keeps_the_first_tracking_id_first() {
    let mut md = offer("webex-outbound.body");
    assert_eq!(md.vendor.recorded_user_originated, Some(true));
    assert_eq!(
        md.vendor.recorded_user.as_deref(),
        Some("5550108105@webex.example.com")
    );
    assert_eq!(md.vendor.calling.as_deref(), Some("sip:8105@192.0.2.95"));
    assert_eq!(
        md.vendor.called.as_deref(),
        Some("sip:+15550166424@192.0.2.95;user=phone")
    );
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:8105@192.0.2.95;user=phone"]),
            ("2", &["sip:+15550166424@192.0.2.95;user=phone"])
        ])
    );
    assert_no_warnings(&md);

    let redirect = update("broadworks-redirect.body");
    assert_eq!(
        redirect.vendor.dialed.as_deref(),
        Some("sip:+15550107500@192.0.2.95")
    );
    assert_eq!(redirect.sessions[0].start, Some(ts("2026-07-01T14:02:00Z")));
    md.merge(&redirect);
    assert_eq!(
        ids(&md),
        [
            ("broadworks:extTrackingID", "tracking-4711:1"),
            ("broadworks:callID", "callhalf-4711:0"),
            ("broadworks:extTrackingID", "NEW-tracking-5150:1"),
            ("broadworks:newExtTrackingID", "NEW-tracking-5150:1"),
            ("broadworks:callID", "callhalf-5150:0"),
        ]
    );
    assert_eq!(md.vendor.recorded_user_originated, Some(false));
    assert_eq!(
        md.vendor.dialed.as_deref(),
        Some("sip:+15550107500@192.0.2.95")
    );
    assert_eq!(
        md.sessions[0].id,
        "urn:uuid:7e7e0000-1111-4000-8000-000000000002"
    );
    assert_eq!(md.extensions.len(), 2);
}

#[test]
fn audiocodes_legacy_bare_lf_without_close_delimiter() {
    let f = load("audiocodes-legacy.body");
    assert!(!f.body.contains(&b'\r'));
    let md = offer("audiocodes-legacy.body");
    assert_eq!(
        md.group_id.as_deref(),
        Some("0f2b3c4d-aaaa-4bbb-8ccc-000000000001")
    );
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("0f2b3c4d-aaaa-4bbb-8ccc-000000000001")
    );
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["+15550170001@192.0.2.110"]),
            ("2", &["6001@192.0.2.111"])
        ])
    );
    assert_eq!(
        ids(&md),
        [
            ("audiocodes:GenesysUUID", "00GENESYSUUID0000000000000000AB"),
            ("audiocodes:UCID", "00FA080000AA0001"),
        ]
    );
    let vendors: Vec<_> = md.extensions.iter().map(|e| e.vendor.as_str()).collect();
    assert_eq!(vendors, ["audiocodes", "audiocodes"]);
    assert_eq!(
        md.extensions[1].data,
        serde_json::json!({"AvayaUCID": "00FA080000AA0001"})
    );
    assert_no_warnings(&md);
}

#[test]
fn jambonz_extension_keeps_its_fields_as_sent() {
    let md = offer("jambonz.body");
    assert_eq!(
        md.sip_session_id(),
        Some("8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d")
    );
    assert_eq!(
        ids(&md),
        [("jambonz:callsid", "5f4e3d2c-1b0a-4999-8888-777766665555")]
    );
    // jambonz writes the calling number into <jb:callednumber> and the other way round; the
    // participants carry the numbers correctly, so no calling/called hint is taken from it.
    assert_eq!(md.vendor.calling, None);
    let ext = &md.extensions[0];
    assert_eq!(
        (ext.vendor.as_str(), ext.parent.as_deref()),
        ("jambonz", None)
    );
    assert_eq!(ext.data["carrier"], "Carrier & Co");
    assert_eq!(ext.data["direction"], "inbound");
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:+15550190001@192.0.2.120"]),
            ("2", &["sip:+15550190002@192.0.2.121"])
        ])
    );
    assert_no_warnings(&md);
}

#[test]
fn chime_four_streams_with_typo_tag_then_hold() {
    let mut md = offer("chime.body");
    assert_eq!(
        md.sip_session_id(),
        Some("ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2")
    );
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("Q0hJTUUtZ3JvdXA=")
    );
    let alice = md.participant("Q0hJTUUtYWxpY2U=").unwrap();
    assert_eq!(alice.name.as_deref(), Some("Alice"));
    assert_eq!(alice.sends, ["Q0hJTUUtdjE=", "Q0hJTUUtYTE="]);
    assert_eq!(
        senders(&md),
        pairs(&[
            ("96", &["sip:alice@atlanta.example.com"]),
            ("97", &["sip:alice@atlanta.example.com"]),
            ("98", &["sip:bob@biloxi.example.com"]),
            ("99", &["sip:bob@biloxi.example.com"]),
        ])
    );
    let vendors: Vec<_> = md
        .extensions
        .iter()
        .map(|e| (e.vendor.as_str(), e.parent.as_deref()))
        .collect();
    assert_eq!(
        vendors,
        [
            ("callcenter", Some("Q0hJTUUtZ3JvdXA=")),
            ("other", Some("Q0hJTUUtZ3JvdXA=")),
            ("other", Some("Q0hJTUUtc2Vzc2lvbg=="))
        ]
    );
    assert_eq!(md.extensions[2].data["mydata"]["whatever"], "bar");
    assert_eq!(
        md.warnings,
        [
            "stray </name> ignored",
            "</nameID> closed unclosed elements",
            "<naSRCme> in <nameID> of participant Q0hJTUUtYWxpY2U= read as <name>",
        ]
    );

    md.merge(&update("chime-hold.body"));
    assert_eq!(
        senders(&md),
        pairs(&[
            ("96", &[]),
            ("97", &[]),
            ("98", &["sip:bob@biloxi.example.com"]),
            ("99", &["sip:bob@biloxi.example.com"]),
        ])
    );
    // Bob's association in the update has no <recv>: he receives nothing while Alice holds.
    assert!(md.participant("Q0hJTUUtYm9i").unwrap().receives.is_empty());
}

#[test]
fn broken_xml_still_yields_participants_and_streams() {
    let md = offer("broken-xml.body");
    assert_eq!(md.sessions[0].id, "QlJLLXNlc3M");
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:+15550111111@192.0.2.140"]),
            ("2", &["sip:5107@192.0.2.142"])
        ])
    );
    assert_eq!(
        md.participants[0].name.as_deref(),
        Some("Smith < Sons & Co")
    );
    assert_eq!(
        md.participants[0].session_ref.as_deref(),
        Some("QlJLLXNlc3M")
    );
    assert_eq!(md.participants[1].name.as_deref(), Some("5107"));
    assert_eq!(ids(&md), [("oracle:ucid", "00FA0800190001BEEF")]);
    assert_eq!(md.vendor.dialed.as_deref(), Some("5550100777"));
    assert_eq!(md.extensions[0].vendor, "oracle");
    let warnings = md.warnings.join("|");
    for expected in [
        "undeclared namespace prefix apkt",
        "unescaped < read as text",
        "</nameId> closed <nameID>",
        "stray </nmae> ignored",
    ] {
        assert!(
            warnings.contains(expected),
            "missing {expected:?} in {warnings}"
        );
    }
}

#[test]
fn content_length_shorter_than_the_body_loses_only_the_close_delimiter() {
    let f = load("opensips-short-content-length.body");
    let declared = f.declared_length.unwrap();
    assert!(declared < f.body.len());
    let offer = parse_offer(
        Some(&f.content_type),
        &f.body[..declared],
        &OfferLimits::default(),
    )
    .unwrap();
    let MetadataOutcome::Parsed(md) = offer.metadata else {
        panic!("{:?}", offer.metadata)
    };
    assert_eq!(offer.sdp.media.len(), 2);
    assert_eq!(
        senders(&md),
        pairs(&[
            ("1", &["sip:100@192.0.2.150"]),
            ("2", &["sip:+15550155555@192.0.2.151"])
        ])
    );
    // The whole body parses to the same metadata.
    assert_eq!(self::offer("opensips-short-content-length.body"), *md);
}

#[test]
fn every_fixture_is_tested_and_no_prefix_panics() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".body"))
        .collect();
    names.sort();
    let this = include_str!("metadata_layouts.rs");
    for name in &names {
        assert!(this.contains(&format!("\"{name}\"")), "{name} has no test");
        let f = load(name);
        // metadata_update runs the whole offer parser on multipart bodies. Every 7th prefix
        // keeps this quick in debug builds; tests/offer_fixtures.rs tries every one.
        for end in (0..=f.body.len()).step_by(7).chain([f.body.len()]) {
            let _ = metadata_update(
                Some(&f.content_type),
                &f.body[..end],
                &OfferLimits::default(),
            );
        }
    }
    assert!(names.len() >= 25, "{names:?}");
}
