//! How one consuming service runs, as `pizza serve SERVICE` takes it on its command line. The
//! binary parses these options, and the simulation builds each of its service nodes from the same
//! option strings ([`ServiceOpts::from_args`]), so a node in the simulation runs the configuration
//! a `pizza serve` process would (RisingWave's `NodeOpts::parse_from`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use crate::clock::TimeScale;
use crate::config::{ConfigError, SysConfig};

/// `--sys-config`, as every command that reads the shop's configuration takes it.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SysArgs {
    /// The original's config_sys/default.ini (topic, group and client names, partitions and
    /// replication, status codes, menu, watchdog); the original's defaults without it.
    #[arg(long, env = "PIZZA_SYS_CONFIG")]
    pub sys_config: Option<PathBuf>,
}

impl SysArgs {
    /// The shop's configuration: the file given, else the original's defaults.
    pub fn load(&self) -> Result<SysConfig, ConfigError> {
        load_sys(self.sys_config.as_deref())
    }
}

/// A consuming service's options.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ServiceOpts {
    #[command(flatten)]
    pub sys: SysArgs,
    /// Directory for the SQLite files (orders.db, delivery.db). Default: pizza-data (`serve`), a
    /// fresh temporary directory (`demo`).
    #[arg(long, env = "PIZZA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Scales every cooking, delivery and watchdog time: 1 is real time, 0 is instant.
    #[arg(long, env = "PIZZA_TIME_SCALE", default_value = "1")]
    pub time_scale: TimeScale,
    /// Records each service handles at once (ovens, drivers).
    #[arg(long, env = "PIZZA_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Records each service may hold received but unfinished (running or queued behind their order);
    /// what it holds is finished on shutdown. Default: 16 × concurrency, at least 1024.
    #[arg(long, env = "PIZZA_MAX_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: Option<u32>,
}

/// The options alone, as a command line.
#[derive(Parser)]
#[command(name = "pizza serve", no_binary_name = true)]
struct ServiceCli {
    #[command(flatten)]
    opts: ServiceOpts,
}

impl ServiceOpts {
    /// Parses the options from `args` (without the program name) as `pizza serve` would, except
    /// that the environment is not read: the same strings give the same options anywhere.
    pub fn from_args<I, S>(args: I) -> Result<ServiceOpts, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let matches = command_without_env().try_get_matches_from(args)?;
        Ok(ServiceCli::from_arg_matches(&matches)?.opts)
    }

    /// Every option at its default.
    pub fn defaults() -> ServiceOpts {
        ServiceOpts::from_args(std::iter::empty::<&str>()).expect("the defaults parse")
    }

    /// Records received but unfinished: as given, else 16 × concurrency, at least 1024.
    pub fn max_in_flight(&self) -> usize {
        match self.max_in_flight {
            Some(n) => n as usize,
            None => (self.concurrency as usize * 16).max(1024),
        }
    }

    /// The shop's configuration: the file given, else the original's defaults.
    pub fn load_sys(&self) -> Result<SysConfig, ConfigError> {
        self.sys.load()
    }

    /// The service's configuration with `sys` (read by [`ServiceOpts::load_sys`], or built by a
    /// caller that already has one) and its data in `data_dir`.
    pub fn service_config(&self, sys: SysConfig, data_dir: PathBuf) -> ServiceConfig {
        ServiceConfig {
            sys: Arc::new(sys),
            time_scale: self.time_scale,
            data_dir,
            concurrency: self.concurrency as usize,
            max_in_flight: self.max_in_flight(),
        }
    }
}

/// What every service needs besides its transport.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub sys: Arc<SysConfig>,
    /// Scales cooking, delivery and watchdog times (0 = instant, watchdog off).
    pub time_scale: TimeScale,
    /// Where stateful services keep their SQLite files (`delivery.db`, `orders.db`).
    pub data_dir: PathBuf,
    /// Records handled at once per service (ovens, drivers).
    pub concurrency: usize,
    /// Records received but unfinished per service.
    pub max_in_flight: usize,
}

impl ServiceConfig {
    /// `sys` with every other option at its default (see [`ServiceOpts`]).
    pub fn new(sys: SysConfig, data_dir: PathBuf) -> ServiceConfig {
        ServiceOpts::defaults().service_config(sys, data_dir)
    }

    /// The status view's file.
    pub fn view_path(&self) -> PathBuf {
        self.data_dir.join("orders.db")
    }

    /// The web app's own view, which it folds from the log (`view::follow`).
    pub fn web_view_path(&self) -> PathBuf {
        self.data_dir.join("web-view.db")
    }

    /// The delivery store's file.
    pub fn delivery_path(&self) -> PathBuf {
        self.data_dir.join("delivery.db")
    }
}

/// The options' command line, every environment variable unset from it.
fn command_without_env() -> clap::Command {
    ServiceCli::command().mut_args(|a| a.env(None::<&str>))
}

/// The configuration in `path`, else the original's defaults.
pub fn load_sys(path: Option<&Path>) -> Result<SysConfig, ConfigError> {
    match path {
        Some(p) => SysConfig::load(p),
        None => Ok(SysConfig::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_concurrency_unless_given() {
        let o = ServiceOpts::from_args(["--concurrency", "8"]).unwrap();
        assert_eq!((o.concurrency, o.max_in_flight()), (8, 1024));
        let o = ServiceOpts::from_args(["--concurrency", "256"]).unwrap();
        assert_eq!(o.max_in_flight(), 4096);
        let o = ServiceOpts::from_args(["--concurrency", "256", "--max-in-flight", "10"]).unwrap();
        assert_eq!(o.max_in_flight(), 10);
        assert_eq!(ServiceOpts::defaults().max_in_flight(), 1024);
    }

    #[test]
    fn the_environment_does_not_reach_parsed_strings() {
        let with_env = |cmd: clap::Command| cmd.get_arguments().filter(|a| a.get_env().is_some()).count();
        // `pizza serve` reads PIZZA_TIME_SCALE and the others; the strings parse without them.
        assert_eq!(with_env(ServiceCli::command()), 5);
        assert_eq!(with_env(command_without_env()), 0);
        let o = ServiceOpts::from_args(["--time-scale", "0"]).unwrap();
        assert_eq!((o.concurrency, o.time_scale.factor()), (64, 0.0));
    }

    #[test]
    fn a_bad_option_is_a_usage_error() {
        let e = ServiceOpts::from_args(["--concurrency", "0"]).unwrap_err();
        assert!(e.to_string().contains("--concurrency"), "{e}");
        assert!(ServiceOpts::from_args(["--ovens", "3"]).is_err());
    }
}
