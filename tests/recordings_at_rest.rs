//! Recordings at rest, against the real binary: spool and output files readable by the
//! service only (or by `output.group`), and the local sink's `output.retention`.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use siprec_gateway::session::file_name;
use support::gateway::Gateway;
use support::sip_client::{UdpPeer, in_dialog, invite};

const WAIT: Duration = Duration::from_secs(20);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// Records one call; `during` runs while it is in progress.
async fn record_call(gw: &Gateway, call_id: &str, during: impl FnOnce()) {
    let src = UdpPeer::bind(gw.udp_addr()).await;
    src.send(&invite("UDP", src.local, call_id)).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, call_id, &ok)).await;
    during();
    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    gw.wait_for_recording(1, WAIT);
}

#[tokio::test]
async fn spool_and_output_files_are_readable_by_the_service_only() {
    let gw = Gateway::start("");
    let call_id = "private@test";
    let active = gw.spool_dir().join("active").join(file_name(call_id));
    record_call(&gw, call_id, || {
        assert_eq!(mode(&active.join("capture.wav")), 0o600);
        assert_eq!(mode(&active), 0o700);
    })
    .await;
    for dir in [gw.spool_dir(), gw.spool_dir().join("pending"), gw.output_dir()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let name = file_name(call_id);
    for file in [format!("{name}.wav"), format!("{name}.json")] {
        assert_eq!(mode(&gw.output_dir().join(&file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn output_group_may_read_recordings() {
    // A group other than ours when we may chown to it (root), else our own.
    let group = match nix::unistd::Group::from_name("daemon") {
        Ok(Some(g)) if nix::unistd::geteuid().is_root() => g,
        _ => nix::unistd::Group::from_gid(nix::unistd::getegid()).unwrap().expect("our group"),
    };
    let gw = Gateway::start(&format!("[output]\ngroup = {:?}\n", group.name));
    let call_id = "group@test";
    let active = gw.spool_dir().join("active").join(file_name(call_id));
    record_call(&gw, call_id, || {
        assert_eq!(mode(&active.join("capture.wav")), 0o640);
        assert_eq!(std::fs::metadata(active.join("capture.wav")).unwrap().gid(), group.gid.as_raw());
    })
    .await;
    let name = file_name(call_id);
    for file in [format!("{name}.wav"), format!("{name}.json")] {
        let path = gw.output_dir().join(&file);
        assert_eq!(mode(&path), 0o640, "{file}");
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), group.gid.as_raw(), "{file}");
    }
    for dir in [gw.spool_dir(), gw.output_dir()] {
        assert_eq!(mode(&dir) & 0o777, 0o750, "{}", dir.display());
    }
}

#[test]
fn check_config_names_output_group_when_the_group_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gateway.toml");
    std::fs::write(&config, "[output]\ngroup = \"no-such-group-siprec\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("output.group") && stderr.contains("no-such-group-siprec"), "{stderr}");
}

#[test]
fn retention_deletes_old_recordings_and_keeps_new_ones() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("output");
    std::fs::create_dir_all(&output).unwrap();
    let now = siprec_gateway::clock::wall_now();
    for (name, age_days) in [("old.wav", 3), ("old.json", 3), ("new.wav", 0), ("new.json", 0)] {
        let path = output.join(name);
        std::fs::write(&path, b"x").unwrap();
        let age = Duration::from_secs(age_days * 86_400 + 60);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(now - age).unwrap();
    }
    let gw = Gateway::start_in(root, "[output]\nretention = \"1d\"\n");
    gw.wait_for_logs("output.retention: deleted", 2, WAIT);
    assert!(!output.join("old.wav").exists() && !output.join("old.json").exists());
    assert!(output.join("new.wav").exists() && output.join("new.json").exists());
    assert!(gw.log().contains("file=old.wav"), "{}", gw.log());
}
