//! The live console's runtime: terminal set-up and restore, and the event loop that joins
//! terminal input, poll results and admin results over one bounded channel.
//!
//! Threads and tasks: a std thread reads crossterm events (crossterm's reader blocks); a tokio
//! task owns the [`Poller`] and refreshes every `refresh_ms` unless paused, or at once on `r`;
//! admin requests run as their own tasks. The loop redraws after every message. None of them
//! ever blocks the loop: a slow node only delays the next model, never a key press.
//!
//! Invariant: the terminal is restored on every exit path, panics included (a drop guard plus
//! a panic hook that restores before the message is printed).

use std::collections::HashMap;
use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{Event, KeyEvent, KeyEventKind};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::ExecutableCommand;
use ellipsis_console::admin::AdminClient;
use ellipsis_console::app::{AdminReply, AdminRequest, App, Effect};
use ellipsis_console::model::ClusterModel;
use ellipsis_console::poll::Poller;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::{mpsc, watch};

/// Messages queued for the loop; the bound keeps a stalled loop from growing memory.
const CHANNEL_BOUND: usize = 256;
/// How often the input thread checks whether the console is quitting.
const INPUT_POLL: Duration = Duration::from_millis(100);

enum Msg {
    Key(KeyEvent),
    Resize,
    Model(Box<ClusterModel>, HashMap<String, String>),
    Admin(AdminRequest, Result<AdminReply, String>),
    InputFailed(String),
}

/// Poll interval and pause, as the poll task should apply them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PollControl {
    refresh_ms: u64,
    paused: bool,
}

struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<TerminalGuard> {
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        let guard = TerminalGuard;
        std::io::stdout()
            .execute(EnterAlternateScreen)
            .context("cannot open the alternate screen")?;
        Ok(guard)
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = std::io::stdout().execute(LeaveAlternateScreen);
    let _ = std::io::stdout().execute(crossterm::cursor::Show);
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn spawn_input(tx: mpsc::Sender<Msg>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match crossterm::event::poll(INPUT_POLL) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Msg::InputFailed(e.to_string()));
                    return;
                }
            }
            let msg = match crossterm::event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Ok(Event::Resize(..)) => Msg::Resize,
                Ok(_) => continue,
                Err(e) => Msg::InputFailed(e.to_string()),
            };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    })
}

fn spawn_poller(
    mut poller: Poller,
    tx: mpsc::Sender<Msg>,
    mut control: watch::Receiver<PollControl>,
    mut refresh: mpsc::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let model = poller.poll().await;
            let addrs: HashMap<String, String> = model
                .nodes
                .iter()
                .filter_map(|n| poller.http_addr_of(&n.addr).map(|h| (n.addr.clone(), h)))
                .collect();
            if tx.send(Msg::Model(Box::new(model), addrs)).await.is_err() {
                return;
            }
            // Wait for the next tick, a refresh request, or a control change (which restarts
            // the wait with the new interval).
            loop {
                let c = *control.borrow_and_update();
                let tick = async {
                    if c.paused {
                        std::future::pending::<()>().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(c.refresh_ms)).await;
                    }
                };
                tokio::select! {
                    () = tick => break,
                    r = refresh.recv() => match r {
                        Some(()) => break,
                        None => return,
                    },
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
        }
    })
}

/// Runs the console until the user quits.
pub async fn run(app: App, poller: Poller, admin: AdminClient) -> anyhow::Result<()> {
    run_until(app, poller, admin, std::future::pending()).await
}

/// Runs the console until the user quits or `shutdown` resolves (`ell demo` passes its signal
/// handler, so SIGTERM or SIGHUP still tears the embedded cluster down cleanly).
pub async fn run_until(
    mut app: App,
    poller: Poller,
    admin: AdminClient,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous_hook(info);
    }));
    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("cannot open the terminal")?;
    terminal.clear().context("cannot clear the terminal")?;

    let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_BOUND);
    let stop = Arc::new(AtomicBool::new(false));
    let input = spawn_input(tx.clone(), stop.clone());
    let (control_tx, control_rx) = watch::channel(PollControl {
        refresh_ms: app.refresh_ms,
        paused: app.paused,
    });
    // One pending refresh request is enough: more would only repeat it.
    let (refresh_tx, refresh_rx) = mpsc::channel::<()>(1);
    let poll_task = spawn_poller(poller, tx.clone(), control_rx, refresh_rx);
    let result = tokio::select! {
        r = event_loop(
            &mut app,
            &mut terminal,
            &mut rx,
            &tx,
            &control_tx,
            &refresh_tx,
            &admin,
        ) => r,
        () = shutdown => Ok(()),
    };
    stop.store(true, Ordering::Relaxed);
    poll_task.abort();
    drop(rx);
    // The input thread sees `stop` within one INPUT_POLL, except when the terminal is gone
    // (closed window, killed tmux pane): crossterm's poll can then spin without returning.
    // Wait a bounded time and otherwise leave it behind: it ends with the process, and the
    // caller's teardown (the demo's nodes and directory) must not wait on a dead terminal.
    for _ in 0..3 {
        if input.is_finished() {
            let _ = input.join();
            break;
        }
        tokio::time::sleep(INPUT_POLL).await;
    }
    drop(terminal);
    drop(guard);
    result
}

async fn event_loop(
    app: &mut App,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    rx: &mut mpsc::Receiver<Msg>,
    tx: &mpsc::Sender<Msg>,
    control: &watch::Sender<PollControl>,
    refresh: &mpsc::Sender<()>,
    admin: &AdminClient,
) -> anyhow::Result<()> {
    let mut http_of: HashMap<String, String> = HashMap::new();
    loop {
        terminal
            .draw(|f| ellipsis_console::ui::render(f, app))
            .context("cannot draw")?;
        let Some(msg) = rx.recv().await else {
            return Ok(());
        };
        match msg {
            Msg::Key(k) => match app.on_key(k) {
                Effect::Quit => return Ok(()),
                Effect::Refresh => {
                    let _ = refresh.try_send(());
                }
                Effect::Admin(request) => {
                    app.status = Some(format!("running: {}", request.describe()));
                    let admin = admin.clone();
                    let tx = tx.clone();
                    let map = http_of.clone();
                    let base = schedule_base(&app.model, &request);
                    let groups = app.model.groups();
                    tokio::spawn(async move {
                        let r = admin
                            .execute(&request, |n| map.get(n).cloned(), base, &groups)
                            .await
                            .map_err(|e| e.to_string());
                        let _ = tx.send(Msg::Admin(request, r)).await;
                    });
                }
                Effect::None => {}
            },
            Msg::Resize => {}
            Msg::Model(model, addrs) => {
                http_of = addrs;
                app.on_model(*model);
            }
            Msg::Admin(request, result) => {
                let done = result.is_ok();
                app.on_admin_result(&request, result, now_s());
                if done {
                    // Show the effect of the action without waiting for the next tick.
                    let _ = refresh.try_send(());
                }
            }
            Msg::InputFailed(e) => anyhow::bail!("terminal input failed: {e}"),
        }
        let wanted = PollControl {
            refresh_ms: app.refresh_ms,
            paused: app.paused,
        };
        control.send_if_modified(|c| {
            let changed = *c != wanted;
            *c = wanted;
            changed
        });
    }
}

/// The backend's current `(timeout_s, compact)`, kept by a schedule change.
fn schedule_base(model: &ClusterModel, request: &AdminRequest) -> (u64, bool) {
    if let AdminRequest::DefragSchedule { node, backend, .. } = request {
        if let Some(b) = model
            .backends()
            .find(|b| &b.node == node && b.id == *backend)
        {
            return (b.defrag.timeout_s, b.defrag.compact);
        }
    }
    (86_400, false)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
