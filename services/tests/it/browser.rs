//! The web app in a real headless Chromium (Debian's `chromium`), driven by `e2e/order.mjs`
//! (playwright-core): log in, order, watch the status reach "Your pizza was delivered" live, and a
//! second customer cannot see the first one's order. Screenshots are left in the test's output
//! directory (`target/tmp/e2e/`).
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm install --prefix e2e`; `.ci/run` sets both up.
//! Without them the test says so on stderr (uncaptured) and passes, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

#[test]
#[cfg_attr(
    not(browser_runs),
    ignore = "needs Chromium (/usr/bin/chromium or $CHROMIUM) and `npm ci --prefix e2e` (services/build.rs)"
)]
fn a_customer_orders_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let e2e = workspace().join("e2e");
    if !Path::new(&chromium).exists() || !e2e.join("node_modules/playwright-core").exists() {
        crate::common::cannot_run(
            "browser::a_customer_orders_in_a_real_browser",
            &format!("needs {chromium} and `npm ci --prefix e2e`"),
        );
    }
    let (mut demo, addr) = crate::common::start_demo(&["--time-scale", "0.2"]);
    let listen = addr.to_string();

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let run = Command::new("node")
        .arg(e2e.join("order.mjs"))
        .arg(format!("http://{listen}"))
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let _ = demo.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{stdout}");
    for shot in ["order-delivered.png", "other-customer.png"] {
        let p = out.join(shot);
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 1000).unwrap_or(false),
            "screenshot {}",
            p.display()
        );
        eprintln!("screenshot: {}", p.display());
    }
}
