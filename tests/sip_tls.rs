//! SIP over TLS against the real binary: an SBC (tokio-rustls here, since sipp's TLS support
//! may not be built in) probes with OPTIONS and records a call over a `tls:` listener, with
//! and without mutual TLS; the certificate is read again on SIGHUP.

mod support;

use std::time::Duration;

use support::gateway::Gateway;
use support::sip_client::{connect_tls, in_dialog, invite, ok_to, options, tls_config, tls_fixture};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn options_and_a_recorded_call_over_tls_answer_with_a_sips_contact() {
    let gw = Gateway::start(&tls_config(""));
    let addr = gw.listen_addr("tls");
    let mut sbc = connect_tls(addr, false).await.expect("TLS handshake without mutual TLS");
    sbc.send(&options("TLS", sbc.local, "tls1")).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));

    let call_id = "tls-call-1@test";
    sbc.send(&invite("TLS", sbc.local, call_id)).await.unwrap();
    let ok = sbc.final_response().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    let contact = ok.header("Contact").unwrap();
    assert!(contact.contains("<sips:") && contact.contains(";transport=tls"), "Contact over TLS: {contact}");
    sbc.send(&in_dialog("ACK", 1, "TLS", sbc.local, call_id, &ok)).await.unwrap();
    sbc.send(&in_dialog("BYE", 2, "TLS", sbc.local, call_id, &ok)).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["sessionId"], call_id);
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye", "{:#}", rec.info);
    assert_eq!(rec.wav.channels.len(), 2);
}

#[tokio::test]
async fn our_bye_over_tls_has_a_tls_via_and_ends_the_call_at_max_duration() {
    let gw = Gateway::start(&format!("{}[limits]\nmax_call_duration = \"2s\"\n", tls_config("")));
    let mut sbc = connect_tls(gw.listen_addr("tls"), false).await.unwrap();
    let call_id = "tls-max-duration@test";
    sbc.send(&invite("TLS", sbc.local, call_id)).await.unwrap();
    let ok = sbc.final_response().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    sbc.send(&in_dialog("ACK", 1, "TLS", sbc.local, call_id, &ok)).await.unwrap();

    let bye = sbc.read().await.expect("the gateway's BYE at max_call_duration");
    assert_eq!(bye.method(), Some("BYE"));
    let via = bye.header("Via").unwrap();
    assert!(via.starts_with("SIP/2.0/TLS "), "Via of our BYE over TLS: {via}");
    sbc.send(&ok_to(&bye)).await.unwrap();

    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "max-duration", "{:#}", rec.info);
    let secs = rec.info_seconds();
    assert!((secs - 2.0).abs() < 0.05, "the recording ends at the limit, not at the check: {secs}");
    gw.wait_for_log("limits.max_call_duration", WAIT);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with() {
    let ca = format!("tls_client_ca = {:?}", tls_fixture("client-ca.pem"));
    let gw = Gateway::start(&tls_config(&ca));
    let addr = gw.listen_addr("tls");

    // TLS 1.3 clients finish their side before the server has checked the certificate, so the
    // refusal may show on the first read rather than in connect.
    match connect_tls(addr, false).await {
        Err(_) => {}
        Ok(mut sbc) => {
            let _ = sbc.send(&options("TLS", sbc.local, "nocert")).await;
            let answer = sbc.read().await;
            assert!(answer.is_err(), "a client without a certificate was answered: {answer:?}");
        }
    }
    gw.wait_for_log("TLS handshake refused", WAIT);

    let mut sbc = connect_tls(addr, true).await.expect("handshake with the client certificate");
    sbc.send(&options("TLS", sbc.local, "cert")).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));
}

#[tokio::test]
async fn sighup_reads_the_certificate_again_and_keeps_the_old_one_when_the_new_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(tls_fixture("server.pem"), &cert).unwrap();
    std::fs::copy(tls_fixture("server.key"), &key).unwrap();
    let config = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n\
         tls_certificate = {cert:?}\ntls_private_key = {key:?}\n"
    );
    let gw = Gateway::start(&config);
    let addr = gw.listen_addr("tls");

    std::fs::write(&cert, "not a certificate").unwrap();
    gw.sighup();
    gw.wait_for_log("TLS files not reloaded", WAIT);
    let mut sbc = connect_tls(addr, false).await.expect("the old certificate still serves");
    sbc.send(&options("TLS", sbc.local, "old")).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));

    std::fs::copy(tls_fixture("server.pem"), &cert).unwrap();
    gw.sighup();
    gw.wait_for_log("TLS certificate and key reloaded", WAIT);
    let mut sbc = connect_tls(addr, false).await.expect("the reloaded certificate serves");
    sbc.send(&options("TLS", sbc.local, "new")).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));
}
