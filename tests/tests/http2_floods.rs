//! The HTTP/2 floods beside ordinary clients: during each flood (rapid reset, CONTINUATION,
//! PING, SETTINGS) ordinary keep-alive clients keep at least 80% of their throughput, and no
//! flooding request reaches Python. As in the slow-client test, windows with and without a flood
//! alternate, so a change in the machine's load hits both alike, and each flood runs in two
//! windows, so that one window's noise does not decide alone. Alone in its file: it measures
//! throughput, and test files run one after another.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{get, Flood, FloodKind, Load, Sluice, DEADLINE};

const CLIENTS: usize = 4;
const WINDOW: Duration = Duration::from_secs(5);
/// Flooding connections at once, and frames a second each: 16,000 frames a second in all,
/// paced, so the flooding client itself takes little of the machine.
const FLOODERS: usize = 8;
const FRAMES_PER_SECOND: u64 = 2000;

#[test]
fn ordinary_clients_keep_80_percent_of_their_throughput_during_each_http2_flood() {
    let sluice = Sluice::serve("slowclients:app")
        .workers(1)
        .threads(8)
        .start();
    let addr = sluice.addr();
    let load = Load::start(CLIENTS, addr, "/hit");
    load.wait_all_served(20, DEADLINE);

    // Baseline, flood, baseline, flood, ..., baseline.
    let kinds = [
        FloodKind::RapidReset,
        FloodKind::Continuation,
        FloodKind::Ping,
        FloodKind::Settings,
    ];
    let mut windows: Vec<(Option<FloodKind>, Instant, Instant)> = Vec::new();
    let mut reports = Vec::new();
    let mut measure = |flood: Option<FloodKind>| {
        let running = flood.map(|kind| Flood::start(addr, kind, FLOODERS, FRAMES_PER_SECOND));
        // Let the flood get going before the window opens.
        if running.is_some() {
            std::thread::sleep(Duration::from_millis(500));
        }
        let from = Instant::now();
        std::thread::sleep(WINDOW);
        windows.push((flood, from, Instant::now()));
        if let Some(running) = running {
            reports.push((flood, running.stop()));
        }
    };
    // Every flood twice, so one window's noise on a shared machine does not decide alone.
    measure(None);
    for kind in kinds.into_iter().chain(kinds) {
        measure(Some(kind));
        measure(None);
    }
    let tally = load.stop();
    tally.assert_no_failures("ordinary clients");

    // Complete responses a second over the windows of one kind (no flood, or one flood).
    let rate = |kind: Option<FloodKind>| {
        let (n, time) = windows.iter().filter(|w| w.0 == kind).fold(
            (0, Duration::ZERO),
            |(n, time), &(_, from, to)| {
                let served = tally
                    .records
                    .iter()
                    .filter(|r| r.outcome.is_ok() && r.done >= from && r.done < to)
                    .count();
                (n + served, time + (to - from))
            },
        );
        n as f64 / time.as_secs_f64()
    };
    let baseline = rate(None);
    let mut summary = vec![format!("baseline {baseline:.0} req/s")];
    let mut failures = Vec::new();
    for kind in kinds {
        let during = rate(Some(kind));
        let ratio = during / baseline;
        let (frames, reconnects) = reports
            .iter()
            .filter(|(k, _)| *k == Some(kind))
            .fold((0, 0), |(f, r), (_, report)| {
                (f + report.frames, r + report.reconnects)
            });
        summary.push(format!(
            "{kind:?}: {during:.0} req/s, ratio {ratio:.3}, {frames} frames, {reconnects} reconnects"
        ));
        if ratio < 0.8 {
            failures.push(format!("{kind:?}: {ratio:.3} < 0.8"));
        }
        assert!(frames > 0, "{kind:?} sent nothing");
    }
    eprintln!("{}", summary.join("\n"));
    assert!(failures.is_empty(), "{failures:?}\n{}", summary.join("\n"));

    // Rapid reset and CONTINUATION floods were sent away again and again.
    for (kind, report) in &reports {
        if matches!(kind, Some(FloodKind::RapidReset | FloodKind::Continuation)) {
            assert!(
                report.reconnects > 1,
                "{kind:?} was never sent away: {report:?}"
            );
        }
    }
    // No flooding request ever reached Python.
    let stats: Value = get(addr, "/stats").json();
    assert_eq!(stats["hits"]["/flood"], Value::Null, "{stats}");
}
