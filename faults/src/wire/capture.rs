//! The capture itself: an `AF_PACKET` raw socket on one interface, read
//! by a background thread that feeds every frame to a [`Scan`] as it
//! arrives. This is the only code in the suite that calls the C library
//! directly (there is no raw-socket API in `std`).

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{ClusterKey, Scan, Tally};

/// An `AF_PACKET` socket that receives every frame on one interface, with
/// the interface in promiscuous mode (a bridge passes frames it forwards
/// between its ports up to its own taps only then) for as long as the
/// socket is open.
struct PacketSocket {
    fd: OwnedFd,
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error(what))
    }
}

/// Receive buffer asked for: a burst of gossip while the thread is not
/// scheduled must not overflow it (the suite shares two cores).
const RCVBUF_BYTES: i32 = 32 << 20;
/// How often a blocked receive wakes up to check for the stop signal.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);

impl PacketSocket {
    /// A raw packet socket bound to nothing yet: fails without root
    /// (`CAP_NET_RAW`), which is what [`probe`] checks.
    fn unbound() -> io::Result<OwnedFd> {
        // Protocol 0: it receives nothing until `bind` names the interface,
        // so no frame from another interface slips in first.
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last_error("socket(AF_PACKET, SOCK_RAW)"));
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn open(interface: &str) -> io::Result<PacketSocket> {
        let name = CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has NUL"))?;
        // SAFETY: `name` is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(last_error(&format!("no interface named {interface}")));
        }
        let fd = Self::unbound()?;
        // Root may exceed rmem_max; fall back to the ordinary limit.
        if setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &RCVBUF_BYTES,
            "",
        )
        .is_err()
        {
            setsockopt(
                &fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &RCVBUF_BYTES,
                "SO_RCVBUF",
            )?;
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECV_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout,
            "SO_RCVTIMEO",
        )?;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a sockaddr_ll and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_error(&format!("bind to {interface}")));
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: index as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
            "PACKET_ADD_MEMBERSHIP (promiscuous)",
        )?;
        Ok(PacketSocket { fd })
    }

    /// The next frame into `buf`: its length on the wire (the copy is cut
    /// at `buf.len()`), or `None` when none came within the timeout (or,
    /// with `wait == false`, none is queued).
    fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>> {
        let flags = libc::MSG_TRUNC | if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(None)
            }
            _ => Err(e),
        }
    }

    /// Frames the kernel dropped since the last call (the counters reset
    /// when read).
    fn drops(&self) -> io::Result<u64> {
        // SAFETY: all-zero is a valid tpacket_stats.
        let mut stats: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(u64::from(stats.tp_drops))
        } else {
            Err(last_error("PACKET_STATISTICS"))
        }
    }
}

/// Fails when this process may not open raw packet sockets (not root, no
/// `CAP_NET_RAW`): the capture, and so the fault suite, cannot run.
pub fn probe() -> io::Result<()> {
    PacketSocket::unbound().map(drop)
}

/// Largest frame read whole. Veth and bridges pass TCP segments of up to
/// 64 KiB (segmentation offload); bigger ones are counted as truncated.
const FRAME_BUF: usize = 256 * 1024;
/// Frames still queued when the capture stops are read up to this many.
const MAX_DRAIN: usize = 1_000_000;

/// A running capture on one interface.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Tally>>,
}

impl Capture {
    /// Opens the socket here (so a failure is reported to the caller) and
    /// scans in a background thread until [`Capture::finish`] or drop.
    pub fn start(interface: &str, key: &ClusterKey, replicas: Vec<Ipv4Addr>) -> io::Result<Self> {
        let socket = PacketSocket::open(interface)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut scan = Scan::new(key, replicas);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("capture-{interface}"))
            .spawn(move || {
                let mut buf = vec![0u8; FRAME_BUF];
                let mut read = |scan: &mut Scan, wait: bool| match socket.recv(&mut buf, wait) {
                    Ok(Some(len)) => {
                        scan.frame(&buf[..len.min(FRAME_BUF)], len);
                        true
                    }
                    Ok(None) => false,
                    Err(e) => {
                        scan.tally.error = Some(e.to_string());
                        false
                    }
                };
                while !stopping.load(Ordering::SeqCst) && scan.tally.error.is_none() {
                    read(&mut scan, true);
                }
                // What was already queued belongs to the cluster's life too.
                let mut drained = 0;
                while drained < MAX_DRAIN && scan.tally.error.is_none() && read(&mut scan, false) {
                    drained += 1;
                }
                match socket.drops() {
                    Ok(d) => scan.tally.dropped += d,
                    Err(e) => scan.tally.error = Some(e.to_string()),
                }
                scan.tally
            })?;
        Ok(Capture {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and returns what it saw.
    pub fn finish(mut self) -> Tally {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(tally)) => tally,
            Some(Err(_)) => Tally {
                error: Some("the capture thread panicked".to_owned()),
                ..Tally::default()
            },
            None => Tally::default(),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // The receive timeout bounds how long this waits.
        let _ = self.stop_and_join();
    }
}
