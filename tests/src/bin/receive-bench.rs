//! What receiving a copy into a file costs, four ways, on loopback.
//!
//! `cargo run --release -p ellipsis-tests --bin receive-bench [-- --mib N] [--rounds R]
//! [--no-warm] [--only buffer|queued|splice|mmap] [--queue N]`
//!
//! The question it answers: how much of a recovery copy's CPU per byte would go if the target
//! received a record straight into its blob file instead of into a buffer it then writes
//! (what `node/BENCHMARKS.md` names as the one change left that removes work per byte, and
//! which would need the engine to append in reserve / fill / commit steps). It measures the
//! kernel paths alone, outside the node, so the answer comes before the redesign:
//!
//! - `buffer` (what a node does, minus the node): `read` each 1 MiB into one buffer, hash it
//!   (xxh3, as a record's chunk hash), `pwrite` it at the end of the file;
//! - `queued`: the same through a ring of `--queue N` buffers (default 128, a dc job's copies
//!   in flight), each hashed and written N chunks after it arrived: what a wait between
//!   receive and write costs once the buffer has left the CPU's caches;
//! - `splice`: `splice` from the socket into a pipe and from the pipe into the file (no
//!   user-space copy), then hash the bytes where they landed, through a read-only mapping of
//!   the file (the target must still check what it stores);
//! - `mmap`: map the file (extended with `ftruncate` first), prefault each 1 MiB with
//!   `MADV_POPULATE_WRITE`, `read` the socket straight into the mapping, hash it there.
//!
//! The sender is the same for every way, as the node's: `sendfile` of 1 MiB regions of a source
//! file that is in the page cache. Both ends run in this process, each on its own thread, so
//! the process's CPU time over a copy is the whole copy's (the loopback's receiving TCP work
//! runs in the sender's calls). Before each copy 2 x the data of fresh memory is touched and
//! freed, as `recovery-bench` does (see its `warm_memory`), and the previous copy's file is
//! removed. The ways alternate within each round, so a slow spell of the VM hits all of them
//! (`--only WAY` runs one, for a profiler: each copy announces itself on stderr first).
//!
//! Prints, per copy, MB/s (10^6 bytes per second), busy cores and CPU seconds per GB, then the
//! median of each way. Not a test; figures in `node/BENCHMARKS.md`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ellipsis_tests::median;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MIB: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Buffer,
    Queued,
    Splice,
    Mmap,
}

const MODES: [Mode; 4] = [Mode::Buffer, Mode::Queued, Mode::Splice, Mode::Mmap];

/// How many received chunks wait in the `queued` way before they are hashed and written, unless
/// `--queue N` says otherwise: the records a dc job has in flight (`COPIES_IN_FLIGHT`), each
/// a received frame on the target.
const QUEUED_CHUNKS: usize = 128;

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Buffer => "buffer",
            Mode::Queued => "queued",
            Mode::Splice => "splice",
            Mode::Mmap => "mmap",
        }
    }
}

/// User + system CPU time of this process (all threads) so far.
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A source file of `total` bytes, distinct incompressible-looking content, synced and
/// then read once so it sits in the page cache (as a node's freshly written blob does).
fn source(dir: &Path, total: usize) -> Result<File> {
    let path = dir.join("source");
    let mut f = File::create(&path)?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; MIB];
    for _ in 0..total / MIB {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let mut f = File::open(&path)?;
    std::io::copy(&mut f, &mut std::io::sink())?;
    Ok(f)
}

/// Sends `total` bytes of `src` in 1 MiB `sendfile` calls.
fn send(src: &File, sock: TcpStream, total: usize) -> Result<()> {
    let mut off = 0u64;
    while (off as usize) < total {
        let want = MIB.min(total - off as usize);
        if rustix::fs::sendfile(&sock, src, Some(&mut off), want)? == 0 {
            return Err("sendfile: source ended early".into());
        }
    }
    Ok(())
}

/// The chunk hash a record's footer holds for `data`.
fn hash(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// Receives `total` bytes into `file` the way `mode` says; returns the xor of the chunk hashes
/// (checked against the sender's, so no way can skip work).
fn receive(
    mode: Mode,
    mut sock: TcpStream,
    file: &File,
    total: usize,
    queued: usize,
) -> Result<u64> {
    let mut folded = 0u64;
    match mode {
        Mode::Buffer => {
            let mut buf = vec![0u8; MIB];
            let mut off = 0usize;
            while off < total {
                let n = MIB.min(total - off);
                sock.read_exact(&mut buf[..n])?;
                folded ^= hash(&buf[..n]);
                file.write_all_at(&buf[..n], off as u64)?;
                off += n;
            }
        }
        Mode::Queued => {
            let mut ring: Vec<Vec<u8>> = (0..queued).map(|_| vec![0u8; MIB]).collect();
            let chunks = total.div_ceil(MIB);
            let len = |i: usize| MIB.min(total - i * MIB);
            let mut store = |i: usize, buf: &[u8]| -> Result<()> {
                folded ^= hash(buf);
                file.write_all_at(buf, (i * MIB) as u64)?;
                Ok(())
            };
            for i in 0..chunks {
                let slot = i % queued;
                if i >= queued {
                    // The slot's previous chunk goes out before the slot is reused.
                    store(i - queued, &ring[slot][..len(i - queued)])?;
                }
                sock.read_exact(&mut ring[slot][..len(i)])?;
            }
            for i in chunks.saturating_sub(queued)..chunks {
                store(i, &ring[i % queued][..len(i)])?;
            }
        }
        Mode::Splice => {
            use rustix::pipe::{splice, SpliceFlags};
            let (pipe_r, pipe_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            // As large as an unprivileged process may make it (1 MiB by default): one chunk.
            rustix::pipe::fcntl_setpipe_size(&pipe_w, MIB)?;
            file.set_len(total as u64)?;
            let map = Mapping::new(file, total, false)?;
            let mut off = 0usize;
            while off < total {
                let n = MIB.min(total - off);
                let mut file_off = off as u64;
                let end = (off + n) as u64;
                while file_off < end {
                    let s = splice(
                        &sock,
                        None,
                        &pipe_w,
                        None,
                        (end - file_off) as usize,
                        SpliceFlags::MOVE,
                    )?;
                    if s == 0 {
                        return Err("splice: the sender closed early".into());
                    }
                    let mut left = s;
                    while left > 0 {
                        let w = splice(
                            &pipe_r,
                            None,
                            file,
                            Some(&mut file_off),
                            left,
                            SpliceFlags::MOVE,
                        )?;
                        left -= w;
                    }
                }
                folded ^= hash(&map.bytes()[off..off + n]);
                off += n;
            }
        }
        Mode::Mmap => {
            file.set_len(total as u64)?;
            let mut map = Mapping::new(file, total, true)?;
            let mut off = 0usize;
            while off < total {
                let n = MIB.min(total - off);
                map.populate_write(off, n)?;
                let region = &mut map.bytes_mut()[off..off + n];
                sock.read_exact(region)?;
                folded ^= hash(region);
                off += n;
            }
        }
    }
    Ok(folded)
}

/// A shared mapping of a whole file, unmapped on drop. The one place this program needs
/// `unsafe`: mapping memory is outside what Rust can check. The file is this program's own
/// and nothing else truncates it while mapped.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

#[allow(unsafe_code)]
impl Mapping {
    fn new(file: &File, len: usize, writable: bool) -> Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags};
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh shared mapping of an open file of at least `len` bytes.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, file, 0)?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping covers `len` bytes of a file at least that long.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and mapped writable (a read-only mapping faults, not corrupts).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Faults `len` bytes at `off` in writable in one call instead of one fault per page.
    fn populate_write(&self, off: usize, len: usize) -> Result<()> {
        assert!(off + len <= self.len, "populate past the mapping");
        // SAFETY: the range lies inside our mapping; the advice only faults pages in.
        unsafe {
            rustix::mm::madvise(
                self.ptr.add(off).cast(),
                len,
                rustix::mm::Advice::LinuxPopulateWrite,
            )?
        };
        Ok(())
    }
}

#[allow(unsafe_code)]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no slice of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

struct Copy {
    elapsed: Duration,
    cpu: Duration,
}

fn copy(
    mode: Mode,
    src: &File,
    dir: &Path,
    total: usize,
    queued: usize,
    expect: u64,
) -> Result<Copy> {
    let path = dir.join("target");
    let _ = std::fs::remove_file(&path);
    let target = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let cpu_before = cpu_now();
    let folded = std::thread::scope(|s| -> Result<u64> {
        let sender = s.spawn(move || -> std::result::Result<(), String> {
            let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            send(src, sock, total).map_err(|e| e.to_string())
        });
        let (sock, _) = listener.accept()?;
        let folded = receive(mode, sock, &target, total, queued)?;
        sender.join().map_err(|_| "sender panicked")??;
        Ok(folded)
    })?;
    let elapsed = started.elapsed();
    let cpu = cpu_now() - cpu_before;
    if folded != expect {
        return Err(format!(
            "{}: the received bytes do not hash as the source",
            mode.name()
        )
        .into());
    }
    Ok(Copy { elapsed, cpu })
}

fn main() -> Result<()> {
    let mut mib = 1024usize;
    let mut rounds = 5usize;
    let mut warm = true;
    // One way alone (for a profiler), instead of all of them in turn.
    let mut only: Option<usize> = None;
    let mut queued = QUEUED_CHUNKS;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().ok_or("--mib N")?.parse()?,
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            "--no-warm" => warm = false,
            "--queue" => queued = args.next().ok_or("--queue N")?.parse()?,
            "--only" => {
                let name = args.next().ok_or("--only buffer|queued|splice|mmap")?;
                let m = MODES
                    .iter()
                    .position(|m| m.name() == name)
                    .ok_or_else(|| format!("--only: no way named {name}"))?;
                only = Some(m);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if mib == 0 || rounds == 0 || queued == 0 {
        return Err("--mib, --rounds and --queue must be at least 1".into());
    }
    let total = mib * MIB;
    let dir = tempfile::tempdir()?;
    let src = source(dir.path(), total)?;
    let mut expect = 0u64;
    let mut buf = vec![0u8; MIB];
    for i in 0..total / MIB {
        src.read_exact_at(&mut buf, (i * MIB) as u64)?;
        expect ^= hash(&buf);
    }
    drop(buf);
    println!("{mib} MiB per copy, {rounds} rounds, ways alternating; queued: {queued} chunks");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        // Rotate the order too, so no way always follows the same one.
        for k in 0..MODES.len() {
            let m = (round + k) % MODES.len();
            if only.is_some_and(|o| o != m) {
                continue;
            }
            if warm {
                std::hint::black_box(vec![1u8; 2 * total]);
            }
            // On stderr, for a profiler to start on (as recovery-bench's "recovery starts").
            eprintln!("copy starts: {}", MODES[m].name());
            let c = copy(MODES[m], &src, dir.path(), total, queued, expect)?;
            let rate = total as f64 / 1e6 / c.elapsed.as_secs_f64();
            let per_gb = c.cpu.as_secs_f64() / (total as f64 / 1e9);
            println!(
                "round {}: {:<6} {rate:>6.0} MB/s, {:.2} cores, {per_gb:.2} CPU-s per GB",
                round + 1,
                MODES[m].name(),
                c.cpu.as_secs_f64() / c.elapsed.as_secs_f64()
            );
            rates[m].push(rate);
            costs[m].push(per_gb);
        }
    }
    for (m, mode) in MODES.iter().enumerate() {
        if rates[m].is_empty() {
            continue;
        }
        println!(
            "median {:<6} {:>6.0} MB/s, {:.2} CPU-s per GB",
            mode.name(),
            median(rates[m].clone()),
            median(costs[m].clone())
        );
    }
    let _ = std::fs::remove_file(dir.path().join("target"));
    Ok(())
}
