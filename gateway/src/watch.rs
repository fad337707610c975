//! `reload`: watching the apps' Python files, the `reload_paths` and the YAML file, and telling
//! the running gateway which of them changed, debounced, so that it reloads as on SIGHUP.
//!
//! notify's own thread reads the kernel's events and hands them, without ever blocking, to a
//! thread of ours that filters them, watches directories that appear, and collects the changed
//! files; once [`DEBOUNCE`] passes without another change they go to the async side as one
//! batch. Nothing here runs on the runtime, and nothing exists unless `reload` is on.
//!
//! Only directories are watched, one by one (never a recursive watch of a whole tree): a file is
//! watched through its directory, so an editor that saves by renaming a new file over the old
//! one is seen, and the directories that cannot hold app code (`__pycache__`, hidden ones,
//! virtualenvs, `node_modules`, sluice's run directory) cost no watch at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use crate::config::Config;

/// Changes less than this apart are one reload.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);
/// Events notify's thread may hand over before ours takes them; past that they are lost, which
/// means "look at everything again".
const EVENT_QUEUE: usize = 4096;
/// The most directories watched; a tree larger than this (a home directory) is watched in part,
/// with a warning.
const MAX_WATCHED_DIRS: usize = 20_000;
/// Changed files named in the reload's log line; the rest are counted.
const NAMED_FILES: usize = 8;

/// What is watched, and how a changed path is judged.
#[derive(Debug)]
struct Rules {
    /// Directories whose `*.py` files are the apps' code, with their subdirectories.
    code: Vec<PathBuf>,
    /// Directories (with their subdirectories) where a change to any file counts.
    any: Vec<PathBuf>,
    /// Single files: the YAML file, and `reload_paths` that name a file.
    files: Vec<PathBuf>,
    /// Never looked at: sluice's run directory (worker sockets come and go there).
    ignored: Vec<PathBuf>,
}

impl Rules {
    fn new(config: &Config, run_dir: &Path) -> Rules {
        let mut rules = Rules {
            code: config.code_dirs(),
            any: Vec::new(),
            files: Vec::new(),
            ignored: vec![run_dir.to_owned()],
        };
        rules.code.sort();
        rules.code.dedup();
        for path in &config.reload_paths {
            if path.is_dir() {
                rules.any.push(path.clone());
            } else {
                if !path.exists() {
                    tracing::warn!(path = %path.display(), "reload: the path does not exist; watching for it");
                }
                rules.files.push(path.clone());
            }
        }
        if let Some(source) = &config.source {
            rules
                .files
                .push(std::path::absolute(source).unwrap_or_else(|_| source.clone()));
        }
        rules
    }

    /// The trees walked for directories to watch.
    fn trees(&self) -> impl Iterator<Item = &PathBuf> {
        self.code.iter().chain(&self.any)
    }

    /// A directory that is not watched and whose files never count.
    fn ignored_dir(&self, dir: &Path) -> bool {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.starts_with('.')
            || name == "__pycache__"
            || name == "node_modules"
            || dir.join("pyvenv.cfg").exists()
            || self.ignored.iter().any(|ignored| dir.starts_with(ignored))
    }

    /// Whether a change to `path` means a reload.
    fn counts(&self, path: &Path) -> bool {
        if self.files.iter().any(|file| file == path) {
            return true;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if editor_temp(name) || self.ignored.iter().any(|d| path.starts_with(d)) {
            return false;
        }
        let under = |root: &PathBuf| self.under(root, path);
        (name.ends_with(".py") && self.code.iter().any(under)) || self.any.iter().any(under)
    }

    /// `path` is below `root`, and no directory between them is ignored.
    fn under(&self, root: &Path, path: &Path) -> bool {
        let Some(parent) = path.parent() else {
            return false;
        };
        let Ok(between) = parent.strip_prefix(root) else {
            return false;
        };
        let mut dir = root.to_owned();
        for part in between.components() {
            dir.push(part);
            if self.ignored_dir(&dir) {
                return false;
            }
        }
        true
    }

    /// Every directory to watch: each tree's directories that are not ignored, and the
    /// directory of each single file.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs = BTreeSet::new();
        for root in self.trees() {
            self.walk(root, &mut dirs);
        }
        for file in &self.files {
            if let Some(dir) = file.parent().filter(|d| d.is_dir()) {
                dirs.insert(dir.to_owned());
            }
        }
        dirs.into_iter().collect()
    }

    /// `root` and its directories that are not ignored (symbolic links are not followed, so
    /// there is no cycle), into `dirs`.
    fn walk(&self, root: &Path, dirs: &mut BTreeSet<PathBuf>) {
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            if dirs.len() >= MAX_WATCHED_DIRS {
                tracing::warn!(root = %root.display(), "reload: more than {MAX_WATCHED_DIRS} directories; watching only some");
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            if !dirs.insert(dir) {
                continue;
            }
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !self.ignored_dir(&path) {
                    stack.push(path);
                }
            }
        }
    }
}

/// An editor's backup, swap or lock file, or its probe (vim's `4913`): never a change of code.
fn editor_temp(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || [".swp", ".swx", ".tmp", ".bak"]
            .iter()
            .any(|ext| name.ends_with(ext))
        || name == "4913"
}

/// Whether an event says something may have changed: reads and opens do not (importing a
/// module opens it).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What reaches our thread.
enum Message {
    Event(notify::Result<Event>),
    /// The gateway is done with reloading.
    Stop,
}

/// The changed files collected and not yet taken, and the wake-up for the async side.
#[derive(Default)]
struct Pending {
    files: Mutex<BTreeSet<PathBuf>>,
    ready: Notify,
}

impl Pending {
    fn add(&self, batch: BTreeSet<PathBuf>) {
        lock(&self.files).extend(batch);
        // Stores a permit if the gateway is busy (reloading): it takes these next.
        self.ready.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running watch of `reload`. Dropping it stops the watching.
pub(crate) struct Watch {
    pending: Arc<Pending>,
    messages: SyncSender<Message>,
}

impl Watch {
    /// Starts watching what `config` says `reload` watches; `run_dir` is sluice's own, never
    /// watched. The directories are walked on the watch's thread, which logs
    /// `reload: watching` once they all are.
    pub(crate) fn start(config: &Config, run_dir: &Path) -> anyhow::Result<Watch> {
        let rules = Rules::new(config, run_dir);
        let (messages, inbox) = sync_channel(EVENT_QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (messages, lost) = (messages.clone(), lost.clone());
            notify::recommended_watcher(move |event| {
                // Never block notify's thread: ours may be waiting on it to add a watch.
                // A full queue means our thread has messages to wake up for; it sees `lost`
                // after the next.
                if let Err(TrySendError::Full(_)) = messages.try_send(Message::Event(event)) {
                    lost.store(true, Ordering::Relaxed);
                }
            })?
        };
        let pending = Arc::new(Pending::default());
        let thread = Watcher {
            rules,
            watcher,
            lost,
            pending: pending.clone(),
        };
        std::thread::Builder::new()
            .name("sluice-reload".into())
            .spawn(move || thread.run(inbox))?;
        Ok(Watch { pending, messages })
    }

    /// The files that changed since the last call, once a change has settled for [`DEBOUNCE`].
    /// Cancel-safe: what is not taken stays for the next call.
    pub(crate) async fn changed(&self) -> Vec<PathBuf> {
        loop {
            self.pending.ready.notified().await;
            let files = std::mem::take(&mut *lock(&self.pending.files));
            if !files.is_empty() {
                return files.into_iter().collect();
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Our thread always drains its queue, so this does not wait long.
        let _ = self.messages.send(Message::Stop);
    }
}

/// The changed files as the reload's log line names them.
pub(crate) fn describe_changed(files: &[PathBuf]) -> String {
    let mut names: Vec<String> = (files.iter().take(NAMED_FILES))
        .map(|f| f.display().to_string())
        .collect();
    if files.len() > NAMED_FILES {
        names.push(format!("and {} more", files.len() - NAMED_FILES));
    }
    names.join(", ")
}

/// Our thread: owns notify's watcher, judges events, debounces.
struct Watcher {
    rules: Rules,
    watcher: RecommendedWatcher,
    lost: Arc<AtomicBool>,
    pending: Arc<Pending>,
}

impl Watcher {
    fn run(mut self, inbox: Receiver<Message>) {
        let watched = self.watch_all();
        tracing::info!(
            directories = watched,
            "reload: watching {}",
            self.describe_roots()
        );
        let mut batch = BTreeSet::new();
        // When the batch goes out: DEBOUNCE after the last change that counted.
        let mut due: Option<Instant> = None;
        loop {
            let message = match due {
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => inbox.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            match message {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Message::Event(Ok(event))) => {
                    if self.judge(&event, &mut batch) {
                        due = Some(Instant::now() + DEBOUNCE);
                    }
                }
                Ok(Message::Event(Err(err))) => tracing::warn!("reload: watching: {err}"),
                Err(RecvTimeoutError::Timeout) => {
                    self.pending.add(std::mem::take(&mut batch));
                    due = None;
                }
            }
            // Events were dropped: something changed, and a directory may have appeared unseen.
            if self.lost.swap(false, Ordering::Relaxed) {
                self.rescan(&mut batch);
                due = Some(Instant::now() + DEBOUNCE);
            }
        }
    }

    /// Adds a watch on every directory of the rules; returns how many there are.
    fn watch_all(&mut self) -> usize {
        let dirs = self.rules.directories();
        for dir in &dirs {
            if let Err(err) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "reload: cannot watch: {err}");
            }
        }
        dirs.len()
    }

    /// Something was missed: watch every directory again (new ones included), and count the
    /// roots as changed.
    fn rescan(&mut self, batch: &mut BTreeSet<PathBuf>) {
        self.watch_all();
        batch.extend(self.rules.trees().cloned());
        batch.extend(self.rules.files.iter().cloned());
    }

    /// Adds the files `event` changed that count to `batch`, and watches the directories it
    /// made; true if any counted.
    fn judge(&mut self, event: &Event, batch: &mut BTreeSet<PathBuf>) -> bool {
        if event.need_rescan() {
            self.rescan(batch);
            return true;
        }
        if !is_change(&event.kind) {
            return false;
        }
        // A directory made or moved in (not one whose attributes changed).
        let appeared = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let mut counted = false;
        for path in &event.paths {
            if appeared
                && path.is_dir()
                && self.rules.trees().any(|root| self.rules.under(root, path))
            {
                counted |= self.watch_new_directory(path, batch);
            } else if self.rules.counts(path) {
                batch.insert(path.clone());
                counted = true;
            }
        }
        counted
    }

    /// A directory made (or moved in) under a tree: watch it and what is below it, and count
    /// the files already there (made before the watch was).
    fn watch_new_directory(&mut self, dir: &Path, batch: &mut BTreeSet<PathBuf>) -> bool {
        if self.rules.ignored_dir(dir) {
            return false;
        }
        let mut dirs = BTreeSet::new();
        self.rules.walk(dir, &mut dirs);
        let mut counted = false;
        for dir in &dirs {
            if let Err(err) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), "reload: cannot watch: {err}");
            }
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_file()) && self.rules.counts(&path) {
                    batch.insert(path);
                    counted = true;
                }
            }
        }
        counted
    }

    fn describe_roots(&self) -> String {
        let mut roots: Vec<String> = (self.rules.code.iter())
            .map(|dir| format!("{}/**/*.py", dir.display()))
            .collect();
        roots.extend(self.rules.any.iter().map(|d| d.display().to_string()));
        roots.extend(self.rules.files.iter().map(|f| f.display().to_string()));
        roots.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(root: &Path) -> Rules {
        Rules {
            code: vec![root.join("app")],
            any: vec![root.join("templates")],
            files: vec![root.join("sluice.yaml")],
            ignored: vec![root.join("app/run")],
        }
    }

    #[test]
    fn only_code_outside_ignored_directories_counts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in [
            "app/pkg",
            "app/venv",
            "app/.git",
            "app/__pycache__",
            "templates/x",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("app/venv/pyvenv.cfg"), "").unwrap();
        let rules = rules(root);
        let counts = |p: &str| rules.counts(&root.join(p));
        assert!(counts("app/wsgi.py"));
        assert!(counts("app/pkg/views.py"));
        assert!(counts("sluice.yaml"));
        assert!(counts("templates/x/page.html"));
        assert!(!counts("app/notes.txt"), "only *.py in the code");
        assert!(!counts("app/venv/lib/site.py"), "a virtualenv");
        assert!(!counts("app/.git/hook.py"), "a hidden directory");
        assert!(!counts("app/__pycache__/wsgi.py"));
        assert!(!counts("app/run/w1.sock"));
        assert!(!counts("app/.wsgi.py.swp"), "vim's swap file");
        assert!(!counts("app/wsgi.py~"), "a backup");
        assert!(!counts("app/.#wsgi.py"), "emacs's lock");
        assert!(!counts("templates/4913"), "vim's probe");
        assert!(!counts("other/x.py"), "outside every root");

        let watched = rules.directories();
        let want: Vec<PathBuf> = ["", "app", "app/pkg", "templates", "templates/x"]
            .iter()
            .map(|p| root.join(p))
            .map(|p| p.components().collect())
            .collect();
        assert_eq!(watched, want);
    }

    #[test]
    fn opening_a_file_is_no_change() {
        use notify::event::CreateKind;
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn the_log_line_names_a_few_files() {
        let files: Vec<PathBuf> = (0..10)
            .map(|i| PathBuf::from(format!("/a/{i}.py")))
            .collect();
        assert_eq!(describe_changed(&files[..2]), "/a/0.py, /a/1.py");
        assert!(describe_changed(&files).ends_with("/a/7.py, and 2 more"));
    }
}
