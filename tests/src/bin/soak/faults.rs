//! Engine IO faults in a soak node process: the plan the driver sends, and the injector the
//! child hands to `ellipsis_node::server::start_with` as `StartOptions::engine_faults`.
//!
//! The control channel is the child's stdin, which only the driver holds: one line per
//! command (`arm GENERATION OP FILE FAULT SKIP COUNT` or `disarm GENERATION`), acknowledged on
//! stderr with `soak-node: armed GENERATION`. Every injected fault is announced on stderr as
//! `soak-node: fault fired LABEL` before the engine sees it, so the driver counts exactly what
//! was injected (the pipe keeps the line even if the process is killed right after).
//!
//! Not a production seam: `ell-node` never installs an injector and has no such channel; only
//! this test binary's `--run-node` mode does. Invariants: at most one rule is armed; a rule
//! fires at most `count` times and then disarms itself, so a driver that loses track of a
//! node (killed, restarted) can never leave a fault behind; a restarted node starts disarmed.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use eblob::{Fault, FaultInjector, IoOp};

/// The kind of failure injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with an IO error (EIO) without touching the file.
    Eio,
    /// The write fails with ENOSPC (`StorageFull`) without touching the file.
    Enospc,
    /// A write of which only the first byte reaches the file, then an error.
    ShortWrite,
    /// A write of which the first half reaches the file, then an error (a torn write).
    TornWrite,
}

impl FaultKind {
    fn word(self) -> &'static str {
        match self {
            FaultKind::Eio => "eio",
            FaultKind::Enospc => "enospc",
            FaultKind::ShortWrite => "short",
            FaultKind::TornWrite => "torn",
        }
    }

    fn parse(w: &str) -> anyhow::Result<FaultKind> {
        Ok(match w {
            "eio" => FaultKind::Eio,
            "enospc" => FaultKind::Enospc,
            "short" => FaultKind::ShortWrite,
            "torn" => FaultKind::TornWrite,
            other => bail!("unknown fault {other:?}"),
        })
    }

    fn label(self) -> &'static str {
        match self {
            FaultKind::Eio => "EIO",
            FaultKind::Enospc => "ENOSPC",
            FaultKind::ShortWrite => "short write (1 byte)",
            FaultKind::TornWrite => "torn write (half)",
        }
    }
}

/// Which of a backend's files a rule applies to. Exact names, so a data-sort's output
/// (`data-M.sorting`, `data-M.index.sorting`) is never hit by a write rule: a fault there
/// fails the sort, not a client write, and the driver expects the latter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `data-N`.
    Data,
    /// `data-N.index` (the write-order index of an unsorted base).
    Index,
}

impl FileKind {
    fn word(self) -> &'static str {
        match self {
            FileKind::Data => "data",
            FileKind::Index => "index",
        }
    }

    fn parse(w: &str) -> anyhow::Result<FileKind> {
        Ok(match w {
            "data" => FileKind::Data,
            "index" => FileKind::Index,
            other => bail!("unknown file kind {other:?}"),
        })
    }

    fn matches(self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let Some(rest) = name.strip_prefix("data-") else {
            return false;
        };
        let number = match self {
            FileKind::Data => rest,
            FileKind::Index => match rest.strip_suffix(".index") {
                Some(n) => n,
                None => return false,
            },
        };
        !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
    }
}

fn op_word(op: IoOp) -> &'static str {
    match op {
        IoOp::Read => "read",
        IoOp::Write => "write",
        IoOp::Sync => "fsync",
    }
}

fn parse_op(w: &str) -> anyhow::Result<IoOp> {
    Ok(match w {
        "read" => IoOp::Read,
        "write" => IoOp::Write,
        "fsync" => IoOp::Sync,
        other => bail!("unknown IO operation {other:?}"),
    })
}

/// One armed fault: let `skip` matching operations through, then fail the next `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The operation it applies to.
    pub op: IoOp,
    /// The files it applies to.
    pub file: FileKind,
    /// What happens to a hit operation.
    pub kind: FaultKind,
    /// Matching operations let through first.
    pub skip: u64,
    /// Matching operations failed after that (then the rule disarms itself).
    pub count: u64,
}

impl Rule {
    /// What the summary table calls a fault this rule injects.
    pub fn label(&self) -> String {
        let file = match self.file {
            FileKind::Data => "a data file",
            FileKind::Index => "an index file",
        };
        format!("{} on {} of {file}", self.kind.label(), op_word(self.op))
    }
}

/// A command on the child's stdin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Replace the armed rule.
    Arm(u64, Rule),
    /// Remove the armed rule.
    Disarm(u64),
}

impl Command {
    /// The line the driver writes (without the newline).
    pub fn line(&self) -> String {
        match self {
            Command::Arm(g, r) => format!(
                "arm {g} {} {} {} {} {}",
                op_word(r.op),
                r.file.word(),
                r.kind.word(),
                r.skip,
                r.count
            ),
            Command::Disarm(g) => format!("disarm {g}"),
        }
    }

    /// Parse a line the driver wrote.
    pub fn parse(line: &str) -> anyhow::Result<Command> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            w.get(i)
                .with_context(|| format!("{line:?}: missing field {i}"))?
                .parse()
                .with_context(|| format!("{line:?}: field {i}"))
        };
        match w.first().copied() {
            Some("arm") if w.len() == 7 => Ok(Command::Arm(
                num(1)?,
                Rule {
                    op: parse_op(w[2])?,
                    file: FileKind::parse(w[3])?,
                    kind: FaultKind::parse(w[4])?,
                    skip: num(5)?,
                    count: num(6)?,
                },
            )),
            Some("disarm") if w.len() == 2 => Ok(Command::Disarm(num(1)?)),
            _ => bail!("bad fault command {line:?}"),
        }
    }
}

/// The child-side injector: consults the armed rule on every engine IO.
#[derive(Debug, Default)]
pub struct PlanInjector {
    armed: Mutex<Option<Rule>>,
}

impl PlanInjector {
    /// Apply a command from the driver; returns its generation for the acknowledgement.
    pub fn apply(&self, c: Command) -> u64 {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        match c {
            Command::Arm(g, rule) => {
                *armed = (rule.count > 0).then_some(rule);
                g
            }
            Command::Disarm(g) => {
                *armed = None;
                g
            }
        }
    }
}

impl FaultInjector for PlanInjector {
    fn on_io(&self, op: IoOp, path: &Path, _offset: u64, len: u64) -> Fault {
        let rule = {
            let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            let Some(rule) = armed.as_mut() else {
                return Fault::None;
            };
            if rule.op != op || !rule.file.matches(path) {
                return Fault::None;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                return Fault::None;
            }
            rule.count -= 1;
            let hit = *rule;
            if rule.count == 0 {
                *armed = None;
            }
            hit
        };
        let fault = match (rule.kind, op) {
            // A sync or read cannot be short: those kinds become plain IO errors there.
            (FaultKind::Enospc, _) => Fault::Fail(std::io::ErrorKind::StorageFull),
            (FaultKind::ShortWrite, IoOp::Write) => Fault::ShortWrite(1.min(len)),
            (FaultKind::TornWrite, IoOp::Write) => Fault::ShortWrite(len / 2),
            _ => Fault::Fail(std::io::ErrorKind::Other),
        };
        // Announced before the engine sees the failure: the driver counts from these lines.
        eprintln!("soak-node: fault fired {}", rule.label());
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_line() {
        let rule = Rule {
            op: IoOp::Sync,
            file: FileKind::Index,
            kind: FaultKind::Eio,
            skip: 3,
            count: 1,
        };
        for c in [Command::Arm(7, rule), Command::Disarm(8)] {
            assert_eq!(Command::parse(&c.line()).ok(), Some(c));
        }
        assert!(Command::parse("arm 1 write data melt 0 1").is_err());
        assert!(Command::parse("disarm").is_err());
    }

    #[test]
    fn file_kinds_match_exact_base_names_only() {
        let p = |s: &str| Path::new("/b").join(s);
        assert!(FileKind::Data.matches(&p("data-12")));
        assert!(!FileKind::Data.matches(&p("data-12.index")));
        assert!(!FileKind::Data.matches(&p("data-12.sorting")));
        assert!(FileKind::Index.matches(&p("data-0.index")));
        assert!(!FileKind::Index.matches(&p("data-0.index.sorted")));
        assert!(!FileKind::Index.matches(&p("data-0.index.sorting")));
        assert!(!FileKind::Index.matches(&p("data-.index")));
    }

    #[test]
    fn a_rule_skips_then_fires_count_times_then_disarms_itself() {
        let inj = PlanInjector::default();
        inj.apply(Command::Arm(
            1,
            Rule {
                op: IoOp::Write,
                file: FileKind::Data,
                kind: FaultKind::TornWrite,
                skip: 1,
                count: 2,
            },
        ));
        let data = Path::new("/b/data-0");
        let index = Path::new("/b/data-0.index");
        assert_eq!(inj.on_io(IoOp::Write, index, 0, 100), Fault::None);
        assert_eq!(inj.on_io(IoOp::Read, data, 0, 100), Fault::None);
        assert_eq!(inj.on_io(IoOp::Write, data, 0, 100), Fault::None);
        assert_eq!(inj.on_io(IoOp::Write, data, 0, 100), Fault::ShortWrite(50));
        assert_eq!(inj.on_io(IoOp::Write, data, 0, 100), Fault::ShortWrite(50));
        assert_eq!(inj.on_io(IoOp::Write, data, 0, 100), Fault::None);
    }
}
