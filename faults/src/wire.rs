//! Proof that the cluster key never crosses the wire.
//!
//! This module owns the per-cluster [`ClusterKey`] and the [`Capture`]: a
//! background thread that reads every frame on the cluster's Docker bridge
//! through an `AF_PACKET` raw socket for the whole life of the cluster, and
//! scans each frame as it arrives (nothing is buffered beyond one frame).
//!
//! Each frame is searched for the key and for every window of half its
//! length, so a key cut across two TCP segments is still caught (one of the
//! two parts holds at least half of it). A capture that sees nothing would
//! prove nothing, so it also keeps a positive control: it counts frames
//! between replica addresses and collects workload values (`"s<session>-<n>"`,
//! JSON text inside MessagePack, so visible as raw bytes) that travel
//! between two replicas; the scenario then confirms that at least one of
//! them is a value its clients wrote. [`Tally::verdict`] turns all that into
//! a pass or a failure that names the direction and shows a hex excerpt with
//! the key's bytes masked.
//!
//! Limits: the bridge carries what goes between containers and between a
//! container and the host; a replica's traffic to itself (loopback inside
//! its container) and anything a disconnected replica sends never reach it.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;

use aho_corasick::{AhoCorasick, MatchKind};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rand::distr::{Alphanumeric, SampleString};

mod capture;

pub use capture::{probe, Capture};

/// Length of the random key every fault-suite cluster runs with.
pub const KEY_LEN: usize = 40;

/// A cluster key. Its `Debug` and `Display` show only a fingerprint, so it
/// cannot end up in a log or a panic message by accident.
#[derive(Clone)]
pub struct ClusterKey(String);

impl ClusterKey {
    /// A fresh random alphanumeric key of [`KEY_LEN`] characters.
    pub fn random() -> Self {
        ClusterKey(Alphanumeric.sample_string(&mut rand::rng(), KEY_LEN))
    }

    /// The key itself, for the replicas' environment and the scanner only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short fingerprint that identifies the key in logs without
    /// revealing it (the leading bits of a 64-bit hash).
    pub fn fingerprint(&self) -> String {
        let mut h = DefaultHasher::new();
        self.0.hash(&mut h);
        format!("{:08x}", h.finish() >> 32)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterKey({} chars, fingerprint {})",
            self.0.len(),
            self.fingerprint()
        )
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where a frame holds key bytes: the maximal run `start..end` of the
/// frame that equals a contiguous part of the key at least half its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    /// The run is the whole key.
    pub whole: bool,
}

/// Finds the key, or any half of it, in a frame.
pub struct KeyScanner {
    key: Vec<u8>,
    half: usize,
    /// Every window `key[i..i + half]`, searched for in one pass.
    windows: AhoCorasick,
}

impl KeyScanner {
    pub fn new(key: &[u8]) -> Self {
        assert!(key.len() >= 2, "a key to scan for needs at least two bytes");
        // A key cut in two leaves at least ceil(len / 2) bytes on one side.
        let half = key.len().div_ceil(2);
        let windows = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(key.windows(half))
            .expect("a few dozen short literal patterns always build");
        KeyScanner {
            key: key.to_vec(),
            half,
            windows,
        }
    }

    /// Every place the frame holds key bytes, in order, not overlapping.
    pub fn find(&self, frame: &[u8]) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        for m in self.windows.find_iter(frame) {
            if hits.last().is_some_and(|h| m.start() < h.end) {
                continue; // already inside a run found from an earlier window
            }
            // Grow the window to the whole run of key bytes around it.
            let (mut s, mut k) = (m.start(), m.pattern().as_usize());
            while s > 0 && k > 0 && frame[s - 1] == self.key[k - 1] {
                s -= 1;
                k -= 1;
            }
            let (mut e, mut j) = (m.start() + self.half, m.pattern().as_usize() + self.half);
            while e < frame.len() && j < self.key.len() && frame[e] == self.key[j] {
                e += 1;
                j += 1;
            }
            hits.push(Hit {
                start: s,
                end: e,
                whole: k == 0 && j == self.key.len(),
            });
        }
        hits
    }
}

/// Bytes shown on each side of a hit in an excerpt.
const EXCERPT_CONTEXT: usize = 24;

/// Hex (and printable ASCII) of the frame around the first hit, every byte
/// inside a hit shown as `**` (`*`), so a report never repeats the key.
pub fn masked_excerpt(frame: &[u8], hits: &[Hit]) -> String {
    let Some(first) = hits.first() else {
        return String::new();
    };
    let from = first.start.saturating_sub(EXCERPT_CONTEXT);
    let to = (first.end + EXCERPT_CONTEXT).min(frame.len());
    let masked = |i: usize| hits.iter().any(|h| (h.start..h.end).contains(&i));
    let mut hex = Vec::with_capacity(to - from);
    let mut text = String::with_capacity(to - from);
    for (i, &b) in frame.iter().enumerate().take(to).skip(from) {
        if masked(i) {
            hex.push("**".to_owned());
            text.push('*');
        } else {
            hex.push(format!("{b:02x}"));
            text.push(if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            });
        }
    }
    format!(
        "bytes {from}..{to} of {}: {} |{text}|",
        frame.len(),
        hex.join(" ")
    )
}

/// Workload values (`"s<digits>-<digits>"`, as the fault workload writes
/// them) in a payload, without their quotes.
pub fn workload_values(payload: &[u8]) -> impl Iterator<Item = &str> + '_ {
    memchr::memmem::find_iter(payload, b"\"s").filter_map(move |at| {
        let rest = &payload[at + 2..];
        let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
        let a = digits(rest);
        if a == 0 || rest.get(a) != Some(&b'-') {
            return None;
        }
        let b = digits(&rest[a + 1..]);
        if b == 0 || rest.get(a + 1 + b) != Some(&b'"') {
            return None;
        }
        std::str::from_utf8(&payload[at + 1..at + 2 + a + 1 + b]).ok()
    })
}

/// One frame with key bytes in it.
#[derive(Clone, Debug)]
pub struct Leak {
    /// `src→dst` as `ip:port` (or the frame type when it is not TCP/UDP
    /// over IPv4).
    pub direction: String,
    pub whole: bool,
    pub excerpt: String,
}

/// Leaks kept in full for the report (all are counted).
const MAX_LEAKS_KEPT: usize = 3;
/// Distinct workload values kept for the positive control.
const MAX_VALUES_KEPT: usize = 256;

/// What a capture saw. Every field is a count or bounded.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub frames: u64,
    pub bytes: u64,
    /// Frames (bytes) from one replica address to another.
    pub replica_frames: u64,
    pub replica_bytes: u64,
    /// Workload values seen travelling between two replicas (bounded).
    pub values: BTreeSet<String>,
    /// Frames that held key bytes, and the first few of them.
    pub leak_frames: u64,
    pub leaks: Vec<Leak>,
    /// Frames longer than the receive buffer (scanned only in part).
    pub truncated: u64,
    /// Frames the kernel dropped because the socket's buffer was full.
    pub dropped: u64,
    /// The capture stopped early on this error.
    pub error: Option<String>,
}

/// Scans frames one at a time into a [`Tally`].
pub struct Scan {
    scanner: KeyScanner,
    replicas: Vec<Ipv4Addr>,
    pub tally: Tally,
}

/// The addresses and ports of a frame, when it is TCP or UDP over IPv4.
struct Flow<'a> {
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &'a [u8],
}

fn flow(frame: &[u8]) -> Option<Flow<'_>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return None;
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    match packet.transport? {
        TransportSlice::Tcp(t) => Some(Flow {
            src: (src, t.source_port()),
            dst: (dst, t.destination_port()),
            payload: t.payload(),
        }),
        TransportSlice::Udp(u) => Some(Flow {
            src: (src, u.source_port()),
            dst: (dst, u.destination_port()),
            payload: u.payload(),
        }),
        _ => None,
    }
}

impl Scan {
    pub fn new(key: &ClusterKey, replicas: Vec<Ipv4Addr>) -> Self {
        Scan {
            scanner: KeyScanner::new(key.expose().as_bytes()),
            replicas,
            tally: Tally::default(),
        }
    }

    /// Scans one frame; `wire_len` is its length on the wire (more than
    /// `frame.len()` when the receive buffer cut it).
    pub fn frame(&mut self, frame: &[u8], wire_len: usize) {
        let t = &mut self.tally;
        t.frames += 1;
        t.bytes += wire_len as u64;
        if wire_len > frame.len() {
            t.truncated += 1;
        }
        let flow = flow(frame);
        // The key is searched for in the whole frame, parsed or not.
        let hits = self.scanner.find(frame);
        if !hits.is_empty() {
            t.leak_frames += 1;
            if t.leaks.len() < MAX_LEAKS_KEPT {
                let direction = match &flow {
                    Some(f) => format!("{}:{}→{}:{}", f.src.0, f.src.1, f.dst.0, f.dst.1),
                    None => "a frame that is not TCP/UDP over IPv4".to_owned(),
                };
                t.leaks.push(Leak {
                    direction,
                    whole: hits.iter().any(|h| h.whole),
                    excerpt: masked_excerpt(frame, &hits),
                });
            }
        }
        if let Some(f) = flow {
            if self.replicas.contains(&f.src.0) && self.replicas.contains(&f.dst.0) {
                t.replica_frames += 1;
                t.replica_bytes += wire_len as u64;
                for v in workload_values(f.payload) {
                    if t.values.len() >= MAX_VALUES_KEPT {
                        break;
                    }
                    t.values.insert(v.to_owned());
                }
            }
        }
    }
}

impl Tally {
    /// One line for the scenario summary.
    pub fn line(&self) -> String {
        format!(
            "frames:{},bytes:{},replica_frames:{},control_values:{},key_frames:{}",
            self.frames,
            self.bytes,
            self.replica_frames,
            self.values.len(),
            self.leak_frames
        )
    }

    /// Passes when the capture saw frames, saw a value the workload wrote
    /// (`written`) travel between two replicas, dropped and cut nothing,
    /// and never saw key bytes. The error names the scenario and every
    /// problem.
    pub fn verdict(&self, scenario: &str, written: impl Fn(&str) -> bool) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(e) = &self.error {
            problems.push(format!("the capture stopped early: {e}"));
        }
        if self.frames == 0 {
            problems.push("it saw no frame at all on the bridge".to_owned());
        } else if self.replica_frames == 0 {
            problems.push(format!(
                "none of its {} frames went between two replicas",
                self.frames
            ));
        }
        if !self.values.iter().any(|v| written(v)) {
            problems.push(format!(
                "positive control failed: no value the workload wrote was seen between two \
                 replicas ({} workload-shaped values seen)",
                self.values.len()
            ));
        }
        if self.dropped > 0 || self.truncated > 0 {
            problems.push(format!(
                "the capture is incomplete: the kernel dropped {} frames and {} were longer \
                 than the receive buffer (key bytes could hide there)",
                self.dropped, self.truncated
            ));
        }
        if self.leak_frames > 0 {
            let mut msg = format!(
                "THE CLUSTER KEY WAS ON THE WIRE in {} of {} frames",
                self.leak_frames, self.frames
            );
            for l in &self.leaks {
                msg.push_str(&format!(
                    "\n    {} ({}): {}",
                    l.direction,
                    if l.whole {
                        "whole key"
                    } else {
                        "part of the key"
                    },
                    l.excerpt
                ));
            }
            problems.push(msg);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "wire capture of scenario {scenario} ({}):\n  {}",
                self.line(),
                problems.join("\n  ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"Q7f2Kx9mZp4LwR8tVb3NcY6hJd1sGu5oXe0aTiMk";

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|c| format!("{c:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn finds_the_whole_key_in_a_frame() {
        let mut frame = b"POST /internal/gossip HTTP/1.1\r\nx-key: ".to_vec();
        let at = frame.len();
        frame.extend_from_slice(KEY);
        frame.extend_from_slice(b"\r\n\r\n");
        let hits = KeyScanner::new(KEY).find(&frame);
        assert_eq!(
            hits,
            vec![Hit {
                start: at,
                end: at + KEY.len(),
                whole: true
            }]
        );
    }

    #[test]
    fn finds_a_key_split_across_two_frames_at_every_cut() {
        let scanner = KeyScanner::new(KEY);
        for cut in 1..KEY.len() {
            let first = [b"...header: ".as_slice(), &KEY[..cut]].concat();
            let second = [&KEY[cut..], b"\r\n\r\nbody".as_slice()].concat();
            let (a, b) = (scanner.find(&first), scanner.find(&second));
            assert!(
                !a.is_empty() || !b.is_empty(),
                "key cut at {cut} was missed in both frames"
            );
            // The side holding at least half the key is the one caught.
            if cut >= KEY.len().div_ceil(2) {
                assert_eq!(a[0].end - a[0].start, cut);
                assert!(!a[0].whole);
            } else {
                assert_eq!(b[0].end - b[0].start, KEY.len() - cut);
            }
        }
    }

    #[test]
    fn finds_nothing_when_the_key_is_absent() {
        let scanner = KeyScanner::new(KEY);
        assert!(scanner.find(b"").is_empty());
        let frame: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        assert!(scanner.find(&frame).is_empty());
        // Less than half the key is not a hit (a MAC in its place would
        // share no more than chance with it).
        let short = &KEY[..KEY.len() / 2 - 1];
        assert!(scanner.find(short).is_empty());
    }

    #[test]
    fn the_excerpt_masks_every_key_byte() {
        let mut frame = b"GET / HTTP/1.1\r\nx-hearsay-cluster-key: ".to_vec();
        frame.extend_from_slice(KEY);
        frame.extend_from_slice(b"\r\n");
        let hits = KeyScanner::new(KEY).find(&frame);
        let excerpt = masked_excerpt(&frame, &hits);
        let key_text = std::str::from_utf8(KEY).unwrap();
        assert!(!excerpt.contains(key_text), "{excerpt}");
        assert!(!excerpt.contains(&key_text[..KEY.len() / 4]), "{excerpt}");
        assert!(!excerpt.contains(&hex(&KEY[..8])), "{excerpt}");
        assert!(excerpt.contains(&"** ".repeat(KEY.len() - 1)), "{excerpt}");
        // The context around it is shown, so a reader sees where it was.
        assert!(excerpt.contains("cluster-key: "), "{excerpt}");
        assert!(excerpt.contains(&hex(b"key: ")), "{excerpt}");
    }

    #[test]
    fn a_partial_key_is_masked_up_to_its_edges() {
        let cut = 30;
        let frame = [b"abc".as_slice(), &KEY[..cut]].concat();
        let hits = KeyScanner::new(KEY).find(&frame);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].start, hits[0].end), (3, 3 + cut));
        let excerpt = masked_excerpt(&frame, &hits);
        assert!(
            excerpt.ends_with(&format!("|abc{}|", "*".repeat(cut))),
            "{excerpt}"
        );
    }

    #[test]
    fn workload_values_are_picked_out_of_a_payload() {
        let payload =
            b"\x82\xa5value\xa7\"s3-17\"\xa1k\"s\"s12-4\" \"s-1\" \"s1-\" \"x2-3\" \"s9-99";
        let found: Vec<&str> = workload_values(payload).collect();
        assert_eq!(found, ["s3-17", "s12-4"]);
    }

    fn frame(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(40000, 8090, 1, 1000);
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn a_scan_passes_only_with_traffic_a_control_value_and_no_key() {
        let key = ClusterKey("Q7f2Kx9mZp4LwR8tVb3NcY6hJd1sGu5oXe0aTiMk".to_owned());
        let replicas = vec![Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3)];
        let written = |v: &str| v == "s1-2";

        let empty = Scan::new(&key, replicas.clone());
        let err = empty.tally.verdict("t", written).unwrap_err();
        assert!(
            err.contains("no frame") && err.contains("positive control"),
            "{err}"
        );

        // A client's write (gateway → replica) is not the control.
        let mut scan = Scan::new(&key, replicas.clone());
        scan.frame(&frame([10, 88, 0, 1], [10, 88, 0, 2], b"\"s1-2\""), 60);
        assert!(scan.tally.verdict("t", written).is_err());
        // The same value between two replicas is.
        scan.frame(&frame([10, 88, 0, 2], [10, 88, 0, 3], b"\xa6\"s1-2\""), 60);
        assert_eq!(scan.tally.verdict("t", written), Ok(()));
        // A value no client wrote is not.
        let mut other = Scan::new(&key, replicas.clone());
        other.frame(&frame([10, 88, 0, 2], [10, 88, 0, 3], b"\"s7-7\""), 60);
        assert!(other.tally.verdict("t", written).is_err());

        // Then the key goes by: the verdict names the scenario, the
        // direction and the excerpt, never the key.
        let leaky = [
            b"x-hearsay-cluster-key: ".as_slice(),
            key.expose().as_bytes(),
        ]
        .concat();
        scan.frame(&frame([10, 88, 0, 3], [10, 88, 0, 2], &leaky), 100);
        let err = scan.tally.verdict("healthy", written).unwrap_err();
        assert!(err.contains("scenario healthy"), "{err}");
        assert!(err.contains("10.88.0.3:40000→10.88.0.2:8090"), "{err}");
        assert!(err.contains("whole key"), "{err}");
        assert!(!err.contains(&key.expose()[..KEY.len() / 2]), "{err}");
        assert!(!format!("{key:?} {key}").contains(key.expose()));
    }

    #[test]
    fn dropped_or_cut_frames_fail_the_verdict() {
        let key = ClusterKey::random();
        assert_eq!(key.expose().len(), KEY_LEN);
        let replicas = vec![Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3)];
        let mut scan = Scan::new(&key, replicas);
        let f = frame([10, 88, 0, 2], [10, 88, 0, 3], b"\"s1-2\"");
        scan.frame(&f, f.len() + 1);
        let err = scan.tally.verdict("t", |_| true).unwrap_err();
        assert!(err.contains("incomplete"), "{err}");
    }
}
