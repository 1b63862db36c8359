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
