//! Worker supervision end to end: a worker SIGKILLed mid-request fails that request with 502 and
//! is replaced; an app that cannot be imported stops sluice with the traceback.

use std::path::Path;

use sluice_tests::{get, http, wait_for, Request, Sluice, DEADLINE};

/// Syscalls `time.sleep` blocks in: clock_nanosleep (CPython >= 3.11), pselect6/select (older
/// CPython), nanosleep. No worker thread sits in these while idle: the worker's own threads
/// block in reads, accepts and futexes.
#[cfg(target_arch = "x86_64")]
const SLEEP_SYSCALLS: &[i64] = &[35, 230, 23, 270];
#[cfg(target_arch = "aarch64")]
const SLEEP_SYSCALLS: &[i64] = &[101, 115, 72];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("add this architecture's sleep syscall numbers");

/// Is some thread of `pid` blocked in a sleep syscall, i.e. is `/sleep` running in it? This is
/// how the test knows the request reached the worker before killing it: killing it earlier
/// would let a replacement serve the request, and prove nothing.
fn sleeping(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
            .is_some_and(|nr| SLEEP_SYSCALLS.contains(&nr))
    })
}

fn pid_of(resp: &http::Response) -> u32 {
    assert_eq!(resp.status(), 200, "{:?}", resp.head);
    resp.text()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("/pid answered {:?}", resp.text()))
}

#[test]
fn killed_worker_fails_its_request_with_502_and_is_replaced() {
    let sluice = Sluice::serve("suite:app").workers(1).threads(4).start();
    let addr = sluice.addr();
    let old = pid_of(&get(addr, "/pid"));
    assert!(
        Path::new(&format!("/proc/{old}")).exists(),
        "/pid {old} is not a process on this machine"
    );
    assert!(
        !sleeping(old),
        "an idle worker already has a thread in a sleep syscall: this test cannot tell when \
         /sleep is running"
    );

    let in_flight = std::thread::spawn(move || http::request(addr, &Request::get("/sleep?s=5")));
    wait_for(DEADLINE, "/sleep to be running in the worker", || {
        sleeping(old).then_some(())
    });
    // SAFETY: plain syscall; `old` is a worker of the sluice this test started.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);

    let resp = in_flight
        .join()
        .unwrap()
        .expect("the in-flight request should get a response, not a dropped connection");
    assert_eq!(resp.status(), 502, "{:?} {:?}", resp.head, resp.text());

    // Only the request that was inside the killed worker fails: the next one waits in the queue
    // for the replacement (within the queue timeout) instead of being answered with an error.
    let resp = http::request(addr, &Request::get("/pid")).expect("a response after the kill");
    assert_eq!(resp.status(), 200, "{:?} {:?}", resp.head, resp.text());
    let new = pid_of(&resp);
    assert_ne!(new, old, "/pid still answered by the killed worker");
    for _ in 0..10 {
        assert_eq!(pid_of(&get(addr, "/pid")), new);
    }
    let resp = http::send(addr, &Request::post("/echo", b"still works".to_vec()));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body, b"still works");
}

#[test]
fn app_that_fails_to_import_stops_sluice_with_the_traceback() {
    let failure = Sluice::serve("broken:app")
        .workers(2)
        .threads(1)
        .start_expect_failure(DEADLINE);
    assert!(
        failure.status.code().is_some_and(|c| c != 0),
        "sluice should exit with a non-zero code, got {}",
        failure.status
    );
    for needle in [
        "Traceback",
        "sluice-import-failure-marker",
        "ZeroDivisionError",
    ] {
        assert!(
            failure.output.contains(needle),
            "output lacks {needle:?}:\n{}",
            failure.output
        );
    }
    assert!(
        !failure.output.contains("listening app="),
        "a failed app must not be reported as listening:\n{}",
        failure.output
    );
}

/// Workers run SCHED_BATCH, so a request handed to a worker does not preempt the gateway that
/// handed it over (they inherit it from the gateway, see `batch_scheduling` in its main), and
/// each leads a session of its own, so it has its own scheduling autogroup rather than the
/// gateway's (see `supervisor::spawn_process`). The request threads inherit the policy too.
#[test]
fn workers_run_batch_scheduled_in_sessions_of_their_own() {
    let sluice = Sluice::serve("suite:app").workers(2).threads(4).start();
    // Enough requests to land on both workers and several threads of each.
    for _ in 0..16 {
        let resp = get(sluice.addr(), "/sched");
        assert_eq!(resp.status(), 200, "{:?}", resp.head);
        assert_eq!(resp.text(), "batch");
    }
    let workers = sluice.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in workers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which ends at the last ')'): state ppid pgrp session.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let (pgrp, session): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        assert_eq!((pgrp, session), (pid, pid), "worker {pid}: {stat}");
        assert_ne!(session, sluice.pid());
    }
}

/// The gateway's threads run SCHED_BATCH as well, so an answer from a worker does not preempt
/// the Python thread that sent it (see `batch_scheduling` in the gateway's main).
#[test]
fn the_gateway_runs_batch_scheduled() {
    const SCHED_BATCH: u32 = 3;
    let sluice = Sluice::serve("suite:app").workers(1).threads(2).start();
    assert_eq!(get(sluice.addr(), "/pid").status(), 200);
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", sluice.pid()))
        .unwrap()
        .map(|task| task.unwrap().path())
        .collect();
    assert!(tasks.len() > 1, "the gateway has its runtime threads");
    for task in tasks {
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        // Field 41 of stat(5), the policy; fields here start at the third, the state.
        let policy: u32 = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(policy, SCHED_BATCH, "{}: {stat}", task.display());
    }
}
