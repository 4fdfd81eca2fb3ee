//! Process and host figures from Linux `/proc`, for the `procfs` stats category.
//!
//! What it is not: a general procfs library. It reads the handful of files the monitoring needs
//! (`/proc/self/stat`, `/proc/self/statm`, `/proc/self/io`, `/proc/self/fd`, `/proc/loadavg`)
//! and tolerates any of them being absent or unreadable (containers, other kernels): a missing
//! figure is reported as `None`, never as a made-up zero.

use std::fs;
use std::path::Path;

/// One sample of the node process and its host (the stats schema type).
pub use ellipsis_core::stats::ProcStats as ProcSample;

/// Clock ticks per second for `/proc/*/stat` CPU fields. Linux has used 100 on every mainstream
/// architecture for decades; asking sysconf would need unsafe FFI for no practical gain.
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// Page size used by `/proc/*/statm`: 4 KiB on x86_64 and aarch64 Linux defaults.
const PAGE_SIZE_BYTES: u64 = 4096;

/// Reads a sample of the current process.
pub fn sample() -> ProcSample {
    sample_from(Path::new("/proc/self"), Path::new("/proc/loadavg"))
}

/// Reads a sample from a procfs-like directory; split out so tests can feed fixture files.
pub fn sample_from(proc_self: &Path, loadavg: &Path) -> ProcSample {
    let mut out = ProcSample::default();
    if let Ok(stat) = fs::read_to_string(proc_self.join("stat")) {
        parse_stat(&stat, &mut out);
    }
    if let Ok(statm) = fs::read_to_string(proc_self.join("statm")) {
        let mut fields = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
        out.vm_bytes = fields.next().flatten().map(|p| p * PAGE_SIZE_BYTES);
        out.rss_bytes = fields.next().flatten().map(|p| p * PAGE_SIZE_BYTES);
    }
    if let Ok(io) = fs::read_to_string(proc_self.join("io")) {
        for line in io.lines() {
            let mut parts = line.splitn(2, ':');
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = value.trim().parse::<u64>().ok();
            match name {
                "read_bytes" => out.io_read_bytes = value,
                "write_bytes" => out.io_write_bytes = value,
                _ => {}
            }
        }
    }
    if let Ok(entries) = fs::read_dir(proc_self.join("fd")) {
        out.open_fds = Some(entries.count() as u64);
    }
    if let Ok(text) = fs::read_to_string(loadavg) {
        let loads: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|f| f.parse().ok())
            .collect();
        if let [one, five, fifteen] = loads[..] {
            out.load_avg = Some([one, five, fifteen]);
        }
    }
    out
}

/// `/proc/PID/stat`: the command name (field 2) is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the *last* `)`.
fn parse_stat(stat: &str, out: &mut ProcSample) {
    let Some(close) = stat.rfind(')') else { return };
    let Some(rest) = stat.get(close + 1..) else {
        return;
    };
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    out.cpu_user_s = field(14).map(|t| t as f64 / CLOCK_TICKS_PER_S);
    out.cpu_system_s = field(15).map(|t| t as f64 / CLOCK_TICKS_PER_S);
    out.threads = field(20);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_of_this_process_reports_memory_and_cpu() {
        let s = sample();
        assert!(s.rss_bytes.is_some_and(|r| r > 0), "{s:?}");
        assert!(s.vm_bytes >= s.rss_bytes);
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.threads.is_some_and(|n| n >= 1), "{s:?}");
        assert!(s.cpu_user_s.is_some());
        assert!(s.load_avg.is_some());
    }

    #[test]
    fn stat_with_parentheses_in_the_command_name_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Fields 14 (utime) = 250 ticks, 15 (stime) = 50 ticks, 20 (threads) = 7.
        let stat = "42 (we(ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 99 1000 10";
        fs::write(dir.path().join("stat"), stat).expect("write");
        fs::write(dir.path().join("statm"), "100 25 0 0 0 0 0").expect("write");
        fs::write(
            dir.path().join("io"),
            "rchar: 1\nread_bytes: 4096\nwrite_bytes: 8192\n",
        )
        .expect("write");
        let loadavg = dir.path().join("loadavg");
        fs::write(&loadavg, "0.50 0.25 0.10 1/100 4242\n").expect("write");
        let s = sample_from(dir.path(), &loadavg);
        assert_eq!(s.cpu_user_s, Some(2.5));
        assert_eq!(s.cpu_system_s, Some(0.5));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.vm_bytes, Some(100 * 4096));
        assert_eq!(s.rss_bytes, Some(25 * 4096));
        assert_eq!(
            (s.io_read_bytes, s.io_write_bytes),
            (Some(4096), Some(8192))
        );
        assert_eq!(s.load_avg, Some([0.5, 0.25, 0.1]));
        assert_eq!(s.open_fds, None, "no fd directory in the fixture");
    }

    #[test]
    fn missing_or_garbage_files_give_none_not_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("stat"), "garbage without parens").expect("write");
        fs::write(dir.path().join("statm"), "x y").expect("write");
        let s = sample_from(dir.path(), &dir.path().join("absent"));
        assert_eq!(s, ProcSample::default());
    }
}
