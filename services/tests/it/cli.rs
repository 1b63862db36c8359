//! Bad flags and bad configuration files get clear errors naming what is wrong.

use std::process::{Command, Output};

fn pizza(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pizza"))
        .args(args)
        .env_remove("PIZZA_KAFKA_CONFIG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = pizza(&["serve", "oven", "--brokers", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown service `oven`"), "{}", stderr(&o));

    let o = pizza(&["serve", "assemble"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--kafka-config"), "{}", stderr(&o));

    let o = pizza(&["serve", "assemble", "--brokers", "127.0.0.1:1", "--time-scale=-1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("time scale must be a finite number >= 0"),
        "{}",
        stderr(&o)
    );

    let o = pizza(&[
        "serve",
        "assemble",
        "--brokers",
        "127.0.0.1:1",
        "--concurrency",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));

    for (flag, value, says) in [
        ("--header-timeout", "0s", "must be above 0"),
        ("--header-timeout", "10", "needs a unit"),
        ("--max-connections", "0", "0 is not in 1..=1000000"),
        ("--shutdown-grace", "soon", "is not a duration"),
    ] {
        let o = pizza(&["serve", "web", "--brokers", "127.0.0.1:1", flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
}

#[test]
fn bad_config_files_are_named_with_the_line_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.ini");
    let o = pizza(&["serve", "assemble", "--kafka-config", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read") && stderr(&o).contains("missing.ini"),
        "{}",
        stderr(&o)
    );

    let kafka = dir.path().join("kafka.ini");
    std::fs::write(&kafka, "[kafka]\nbootstrap.servers = 127.0.0.1:1\n").unwrap();
    let sys = dir.path().join("default.ini");
    std::fs::write(&sys, "[kafka-topic-config]\nnum_partitions = lots\n").unwrap();
    let o = pizza(&[
        "serve",
        "assemble",
        "--kafka-config",
        kafka.to_str().unwrap(),
        "--sys-config",
        sys.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("default.ini: [kafka-topic-config] num_partitions: `lots`"),
        "{e}"
    );

    std::fs::write(&sys, "[pizza]\nsauce\n").unwrap();
    let o = pizza(&[
        "topics",
        "create",
        "--kafka-config",
        kafka.to_str().unwrap(),
        "--sys-config",
        sys.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("default.ini:2: expected `key = value`"),
        "{}",
        stderr(&o)
    );
}

/// `pizza view watch` on a file whose service has not made the view's tables yet (a status
/// instance just started: kafka-faults.sh watched one and failed on "no such table") waits for
/// them, then watches as usual.
#[test]
fn view_watch_waits_for_a_view_still_being_made() {
    use pizza::domain::StatusCodes;
    use pizza::store::ViewStore;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    // The file exists, with no tables in it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0; VACUUM;")
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pizza"))
        .args(["view", "watch", "--every", "50ms", "--for", "3s", "--db"])
        .arg(&db)
        .env_remove("PIZZA_SYS_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let view = ViewStore::open(&db).unwrap();
    view.apply_status(&StatusCodes::default(), "0000000a", 100, 1, None)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        out.contains("1 orders") && out.contains(" 0 status regressions"),
        "{out} {err}"
    );
}

/// `pizza view watch` reports an order whose status moves back in the view it watches (here a
/// write that skips the fold's guard, as a broken status service would make) and exits 1; a view
/// that only moves forward gives exit 0.
#[test]
fn view_watch_reports_a_status_that_moves_back() {
    use pizza::domain::StatusCodes;
    use pizza::store::ViewStore;
    use std::io::{BufRead, Read};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let codes = StatusCodes::default();
    let view = ViewStore::open(&db).unwrap();
    view.apply_status(&codes, "0000000a", 300, 1, None).unwrap();
    view.apply_status(&codes, "0000000b", 100, 1, None).unwrap();
    // Starts a watch and returns once it has taken its first poll (it says so on stderr).
    let watch = |secs: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pizza"))
            .args(["view", "watch", "--every", "20ms", "--for", secs, "--db"])
            .arg(&db)
            .env_remove("PIZZA_SYS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.starts_with("watching 2 orders"), "{first}");
        (child, err)
    };
    let finish = |(child, mut err): (std::process::Child, std::io::BufReader<std::process::ChildStderr>)| {
        let o = child.wait_with_output().unwrap();
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            rest,
        )
    };

    let running = watch("3s");
    view.apply_status(&codes, "0000000b", 200, 2, None).unwrap(); // progress
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE order_status SET status = 200 WHERE order_id = '0000000a'",
            [],
        )
        .unwrap();
    let (code, out, err) = finish(running);
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(err.contains("status regression: 0000000a: 300 -> 200"), "{err}");
    assert!(
        out.contains("2 orders") && out.contains(" 1 status regressions"),
        "{out}"
    );

    // Watched afresh, the view as it now is only moves forward.
    let running = watch("1s");
    view.apply_status(&codes, "0000000a", 999, 3, None).unwrap();
    let (code, out, err) = finish(running);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains(" 0 status regressions"), "{out}");
}
