//! The wire capture on a real interface, without Docker: key bytes and a
//! workload value sent over the host's loopback are seen, and a capture
//! that cannot start says why instead of seeing nothing.
//!
//! Needs root (`CAP_NET_RAW`), like the rest of this package's tests.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use hearsay_faults::wire::{Capture, ClusterKey};

#[test]
fn a_capture_on_loopback_sees_key_halves_and_a_control_value() {
    let key = ClusterKey::random();
    let capture = Capture::start("lo", &key, vec![Ipv4Addr::LOCALHOST])
        .unwrap_or_else(|e| panic!("cannot capture loopback (run as root): {e}"));
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    // The key cut in two datagrams at an uneven point, and a value the way
    // the workload writes it.
    let k = key.expose().as_bytes();
    let cut = k.len() / 2 + 3;
    sender.send_to(&[b"h: ", &k[..cut]].concat(), to).unwrap();
    sender.send_to(&k[cut..], to).unwrap();
    sender.send_to(b"\xa7\"s1-2\"", to).unwrap();
    // Once they have been received they went through the stack (and past
    // the capture); each wait is bounded by the read timeout.
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 128];
    for i in 0..3 {
        if let Err(e) = receiver.recv_from(&mut buf) {
            panic!("datagram {i} did not arrive: {e}");
        }
    }
    let tally = capture.finish();
    assert!(tally.frames >= 3, "{tally:?}");
    assert!(
        tally.leak_frames >= 1,
        "the longer half was not caught: {tally:?}"
    );
    assert!(tally.values.contains("s1-2"), "{tally:?}");
    let err = tally
        .verdict("loopback", |v| v == "s1-2")
        .expect_err("a capture that saw key bytes must fail");
    assert!(err.contains("part of the key"), "{err}");
    assert!(err.contains(&format!("→127.0.0.1:{}", to.port())), "{err}");
    assert!(!err.contains(&key.expose()[..cut]), "{err}");
}

#[test]
fn a_capture_on_a_missing_interface_fails_to_start() {
    let err = Capture::start("hs-missing0", &ClusterKey::random(), vec![])
        .err()
        .expect("no such interface");
    assert!(err.to_string().contains("hs-missing0"), "{err}");
}
