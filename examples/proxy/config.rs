//! Every setting of the proxy: flags and environment variables (declared once, with clap, so
//! `--help` comes from the same declarations), their validation, and the resulting [`Config`].
//!
//! A new setting is a field of [`Args`] (flag, variable, default, help) and a line in
//! [`Config::from_sources`] that validates it into a [`Config`] field; it can then be set in
//! the configuration file's top level too, under its field name (`config_file.rs`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use http::Uri;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use tower_llm_bridge::parsed::BodyRate;
use tower_llm_bridge::translate::ModelMap;

use super::config_file::{ConfigFile, Routing};

/// The proxy's flags, each with its environment variable and default. A flag overrides its
/// variable; an empty variable counts as unset. Secrets are not here: they are read from the
/// environment only (see [`ENV_ONLY`]), so they never show up in `ps`.
#[derive(Debug, Parser)]
#[command(
    name = "proxy",
    about = "An Anthropic Messages API endpoint in front of an OpenAI-compatible backend.",
    after_help = ENV_ONLY_HELP,
    disable_version_flag = true,
    next_line_help = true
)]
pub struct Args {
    /// Address to listen on
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:3000",
        value_name = "ADDR"
    )]
    listen: String,
    /// OpenAI-compatible base URL: /v1/<rest> goes to <url>/<rest>; its path and query are kept
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1",
        value_name = "URL"
    )]
    upstream: String,
    /// The OpenAI API the upstream speaks: chat (<url>/chat/completions) or responses
    /// (<url>/responses: OpenAI's Responses API, reasoning carried across turns)
    #[arg(long, env = "OPENAI_WIRE", default_value = "chat", value_name = "WIRE")]
    wire: String,
    /// Upstream model for sonnet, opus and other claude names
    #[arg(
        long,
        env = "BIG_MODEL",
        default_value = "gpt-4o",
        value_name = "MODEL"
    )]
    big_model: String,
    /// Upstream model for haiku names
    #[arg(
        long,
        env = "SMALL_MODEL",
        default_value = "gpt-4o-mini",
        value_name = "MODEL"
    )]
    small_model: String,
    /// Extra rules pattern=model,... tried in order before the defaults (substring match, ASCII
    /// case ignored)
    #[arg(long, env = "MODEL_MAP", value_name = "RULES")]
    model_map: Option<String>,
    /// Prefixes of upstream reasoning models (max_completion_tokens, developer role, no
    /// temperature)
    #[arg(
        long,
        env = "REASONING_MODELS",
        default_value = "o1,o3,o4,gpt-5",
        value_name = "PREFIXES"
    )]
    reasoning_models: String,
    /// prefix=cap,... clamps max_tokens for upstream models whose name starts with prefix
    /// (longest prefix wins)
    #[arg(
        long,
        env = "MAX_TOKENS_CAPS",
        default_value = "gpt-4o=16384,gpt-4o-mini=16384",
        value_name = "CAPS"
    )]
    max_tokens_caps: String,
    /// Seconds to wait for the upstream's response headers (then 504)
    #[arg(
        long,
        env = "UPSTREAM_TIMEOUT_SECS",
        default_value = "600",
        value_name = "SECS"
    )]
    upstream_timeout_secs: String,
    /// Largest request body (then 413); accepts KiB/MiB/GiB suffixes
    #[arg(
        long,
        env = "BODY_LIMIT_BYTES",
        default_value = "32MiB",
        value_name = "SIZE"
    )]
    body_limit_bytes: String,
    /// Seconds a client may take to send its request headers (slowloris; 0 = no limit)
    #[arg(
        long,
        env = "HEADER_READ_TIMEOUT_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    header_read_timeout_secs: String,
    /// Seconds a request body may take to begin (then 408)
    #[arg(
        long,
        env = "BODY_FIRST_BYTE_SECS",
        default_value = "10",
        value_name = "SECS"
    )]
    body_first_byte_secs: String,
    /// Seconds after which a request body must keep BODY_MIN_RATE on average
    #[arg(
        long,
        env = "BODY_GRACE_SECS",
        default_value = "10",
        value_name = "SECS"
    )]
    body_grace_secs: String,
    /// Slowest average rate of a request body after the grace period, in bytes per second
    /// (slowloris; then 408; 0 = no minimum); accepts KiB/MiB suffixes
    #[arg(
        long,
        env = "BODY_MIN_RATE",
        default_value = "16KiB",
        value_name = "SIZE"
    )]
    body_min_rate: String,
    /// Longest pause between two pieces of a request body (then 408; 0 = no limit)
    #[arg(
        long,
        env = "BODY_READ_TIMEOUT_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    body_read_timeout_secs: String,
    /// Seconds a connection may stay open with no request in flight (HTTP/1 keep-alive and
    /// HTTP/2; 0 = no limit)
    #[arg(
        long,
        env = "IDLE_TIMEOUT_SECS",
        default_value = "60",
        value_name = "SECS"
    )]
    idle_timeout_secs: String,
    /// Seconds between HTTP/2 keep-alive pings (0 = no pings)
    #[arg(
        long,
        env = "H2_PING_INTERVAL_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    h2_ping_interval_secs: String,
    /// Seconds an HTTP/2 client has to answer a ping before the connection is closed
    #[arg(
        long,
        env = "H2_PING_TIMEOUT_SECS",
        default_value = "20",
        value_name = "SECS"
    )]
    h2_ping_timeout_secs: String,
    /// Longest a streamed answer may last in total, even while the upstream keeps sending
    /// (then an error event; 0 = no limit)
    #[arg(
        long,
        env = "STREAM_MAX_SECS",
        default_value = "3600",
        value_name = "SECS"
    )]
    stream_max_secs: String,
    /// Deepest nesting of JSON arrays and objects accepted in a request (then 400), 1..=16384
    #[arg(long, env = "MAX_JSON_DEPTH", default_value = "512", value_name = "N")]
    max_json_depth: String,
    /// Web origins allowed to call the proxy from a browser (comma list such as
    /// https://app.example.com); other Origin headers get 403 unless PROXY_API_KEYS is set
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        default_value = "",
        value_name = "ORIGINS"
    )]
    allowed_origins: String,
    /// Host names served besides loopback names and the listen address (comma list); other
    /// Host headers get 403 unless PROXY_API_KEYS is set (DNS rebinding)
    #[arg(long, env = "ALLOWED_HOSTS", default_value = "", value_name = "HOSTS")]
    allowed_hosts: String,
    /// Seconds open requests may run on after Ctrl-C/SIGTERM
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    shutdown_grace_secs: String,
    /// Log filter: error, warn, info, debug, trace or EnvFilter directives (RUST_LOG is read
    /// when LOG_LEVEL is unset)
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_name = "FILTER")]
    log_level: String,
    /// Answer repeated requests from the response cache (true/false)
    #[arg(
        long,
        env = "CACHE_ENABLED",
        default_value = "true",
        value_name = "BOOL"
    )]
    cache_enabled: String,
    /// Default time to live of a cached response, 1..=86400 (a request may set its own
    /// cache_ttl_secs)
    #[arg(
        long,
        env = "CACHE_TTL_SECS",
        default_value = "300",
        value_name = "SECS"
    )]
    cache_ttl_secs: String,
    /// Most responses kept in memory
    #[arg(
        long,
        env = "CACHE_MAX_ENTRIES",
        default_value = "10000",
        value_name = "N"
    )]
    cache_max_entries: String,
    /// Most bytes of responses kept in memory; accepts KiB/MiB/GiB suffixes
    #[arg(
        long,
        env = "CACHE_MAX_BYTES",
        default_value = "256MiB",
        value_name = "SIZE"
    )]
    cache_max_bytes: String,
    /// Seconds a backend that failed (429, 5xx, timeout, refused) is skipped while another
    /// target of its route is available
    #[arg(
        long,
        env = "BACKEND_COOL_DOWN_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    backend_cool_down_secs: String,
    /// TOML file with [[backends]] and [[routes]] (and any setting above, in snake_case);
    /// flags and variables win over it
    #[arg(long, env = "CONFIG_FILE", value_name = "FILE")]
    config: Option<String>,
}

/// Variables read after a flag's own variable, when that one is unset.
const ALSO_READ: &[(&str, &str)] = &[("log_level", "RUST_LOG")];

/// Settings read from the environment only (secrets, which must not show up in `ps` or shell
/// history); `--help` describes them in [`ENV_ONLY_HELP`].
const ENV_ONLY: &[&str] = &["OPENAI_API_KEY", "PROXY_API_KEYS", "REDIS_URL"];

/// What `--help` prints after the flags.
const ENV_ONLY_HELP: &str = "\
Environment only (secrets; never on the command line, never logged):
  OPENAI_API_KEY
      upstream key, sent as Authorization: Bearer (optional for local backends)
  PROXY_API_KEYS
      comma list of keys clients must send (x-api-key or Authorization: Bearer)
  REDIS_URL
      shared Redis cache tier, e.g. redis://127.0.0.1:6379 (may hold a password)

OpenTelemetry (spans over OTLP/HTTP protobuf; a build with --features otel):
  OTEL_EXPORTER_OTLP_ENDPOINT
      collector base URL, e.g. http://127.0.0.1:4318 (spans go to <url>/v1/traces)
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
      full traces URL instead
  OTEL_EXPORTER_OTLP_HEADERS
      key=value,... sent to the collector (URL-encoded values; may hold a token)
  OTEL_EXPORTER_OTLP_TIMEOUT
      milliseconds per export (default 10000)
  OTEL_SERVICE_NAME
      service.name of the spans (default llm-bridge)
  OTEL_SDK_DISABLED
      true: no export";

/// The declared command with the environment variables detached: values are looked up through
/// the `env` function given to [`Config::from_sources`] (tests pass their own), not by clap.
fn parser() -> clap::Command {
    Args::command().mut_args(|arg| arg.env(None))
}

/// The command as `--help` shows it: variables named, their current values never shown.
fn declared() -> clap::Command {
    Args::command().mut_args(|arg| arg.hide_env_values(true))
}

/// Where each setting's value comes from: its flag, then its variable(s), then the default.
struct Sources<'a> {
    matches: ArgMatches,
    declared: clap::Command,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<ConfigFile>,
}

impl Sources<'_> {
    /// A variable's value, when set and not blank.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of setting `id` and its source (`--flag` or `VARIABLE`, for error messages).
    /// `parsed` is what clap holds for it: the flag's value, or the declared default.
    fn get(&self, id: &str, parsed: Option<&String>) -> Option<(String, String)> {
        let arg = self.declared.get_arguments().find(|a| a.get_id() == id)?;
        let env_name = arg.get_env().and_then(|name| name.to_str()).unwrap_or(id);
        if self.matches.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg
                .get_long()
                .map_or_else(|| id.to_owned(), |l| format!("--{l}"));
            return parsed.map(|value| (flag, value.clone()));
        }
        let also = ALSO_READ
            .iter()
            .filter(|(of, _)| *of == id)
            .map(|(_, n)| *n);
        for name in std::iter::once(env_name).chain(also) {
            if let Some(value) = self.var(name) {
                return Some((name.to_owned(), value));
            }
        }
        if let Some(file) = &self.file
            && let Some((value, line)) = file.settings.get(id)
        {
            return Some((format!("{}:{line}: {id}", file.path), value.clone()));
        }
        parsed.map(|value| (env_name.to_owned(), value.clone()))
    }

    /// Parses setting `id` (which has a default) with `parse`.
    fn parse<T>(
        &self,
        id: &str,
        parsed: &String,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (source, value) = self
            .get(id, Some(parsed))
            .ok_or_else(|| ConfigError(format!("{id} has no value")))?;
        parse(&value).map_err(|why| bad(&source, &value, &why))
    }

    /// Parses optional setting `id` with `parse`; `None` when it has no value.
    fn parse_optional<T>(
        &self,
        id: &str,
        parsed: Option<&String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(id, parsed) {
            None => Ok(None),
            Some((source, value)) => parse(&value)
                .map(Some)
                .map_err(|why| bad(&source, &value, &why)),
        }
    }

    /// A secret from the environment, checked by `check`; its value never goes into errors.
    fn secret<T>(
        &self,
        name: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.var(name) {
            None => Ok(None),
            Some(value) => check(&value)
                .map(Some)
                .map_err(|why| ConfigError(format!("{name}: {why}"))),
        }
    }
}

fn bad(source: &str, value: &str, why: &str) -> ConfigError {
    ConfigError(format!("{source}={value:?}: {why}"))
}

/// A command-line mistake as one line: `unknown argument "--bogus"`, `--listen needs a value`.
fn usage_error(err: &clap::Error) -> ConfigError {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg).unwrap_or_default();
    // clap names the flag with its value name (`--listen <ADDR>`); the flag is enough.
    let flag = arg.split_whitespace().next().unwrap_or_default().to_owned();
    match err.kind() {
        ErrorKind::UnknownArgument => {
            let wanted = flag.trim_start_matches('-').replace('-', "_");
            let hint = ENV_ONLY
                .iter()
                .find(|name| name.eq_ignore_ascii_case(&wanted))
                .map_or(String::new(), |name| {
                    format!(" ({name} is read from the environment only)")
                });
            ConfigError(format!("unknown argument {flag:?}{hint}"))
        }
        ErrorKind::InvalidValue
            if context(ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            ConfigError(format!("{flag} needs a value"))
        }
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            ConfigError(first.trim_start_matches("error: ").to_owned())
        }
    }
}

impl Config {
    /// Reads the configuration from command-line `args` (without the program name) and the
    /// environment (`env(name)`); a flag overrides its variable, empty variables count as unset.
    ///
    /// # Errors
    /// An unknown flag, a flag without a value, or a value that does not parse or is out of
    /// range; the message names the flag or variable.
    pub fn from_sources(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Command, ConfigError> {
        Self::from_sources_reading(args, env, |path| std::fs::read_to_string(path))
    }

    /// [`Config::from_sources`] with the configuration file read by `read_file(path)`, so
    /// that the fuzz target and tests hand the file's text in without a file system.
    ///
    /// # Errors
    /// As [`Config::from_sources`].
    pub fn from_sources_reading(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Command, ConfigError> {
        let argv = std::iter::once("proxy".to_owned()).chain(args);
        let matches = match parser().try_get_matches_from(argv) {
            Ok(matches) => matches,
            Err(err) if err.kind() == ErrorKind::DisplayHelp => {
                return Ok(Command::Help(declared().render_help().to_string()));
            }
            Err(err) => return Err(usage_error(&err)),
        };
        let args = Args::from_arg_matches(&matches).map_err(|err| usage_error(&err))?;
        let mut sources = Sources {
            matches,
            declared: declared(),
            env: &env,
            file: None,
        };
        if let Some((_, path)) = sources.get("config", args.config.as_ref()) {
            let path = path.trim().to_owned();
            let text = read_file(&path)
                .map_err(|err| ConfigError(format!("{path}: cannot read the file: {err}")))?;
            let settings: Vec<&str> = sources
                .declared
                .get_arguments()
                .map(|arg| arg.get_id().as_str())
                .filter(|id| !matches!(*id, "config" | "help"))
                .collect();
            sources.file = Some(ConfigFile::parse(&path, &text, &settings, &env)?);
        }
        Self::from_args(&args, &sources).map(|config| Command::Run(Box::new(config)))
    }

    fn from_args(args: &Args, s: &Sources<'_>) -> Result<Self, ConfigError> {
        let listen = s.parse("listen", &args.listen, |v| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| "not an address such as 127.0.0.1:3000 or [::]:3000".to_owned())
        })?;
        let upstream = s.parse("upstream", &args.upstream, |v| UpstreamUrl::parse(v.trim()))?;
        let wire = s.parse("wire", &args.wire, |v| match v.trim() {
            "chat" => Ok(Wire::Chat),
            "responses" => Ok(Wire::Responses),
            _ => Err("must be chat or responses".to_owned()),
        })?;
        let openai_api_key = s.secret("OPENAI_API_KEY", |v| {
            let v = v.trim();
            HeaderValue::try_from(format!("Bearer {v}"))
                .map(|_| Secret(v.to_owned()))
                .map_err(|_| "contains characters not allowed in a header".to_owned())
        })?;
        let big_model = s.parse("big_model", &args.big_model, model_name)?;
        let small_model = s.parse("small_model", &args.small_model, model_name)?;
        let explicit_model_map = s
            .parse_optional("model_map", args.model_map.as_ref(), |v| {
                pairs(v, model_name)
            })?
            .unwrap_or_default();
        let model_map = explicit_model_map
            .iter()
            .fold(ModelMap::new(), |map, (pattern, target)| {
                map.contains(pattern.as_str(), target.as_str())
            })
            .claude_defaults(big_model.as_str(), small_model.as_str());
        let reasoning_models =
            s.parse("reasoning_models", &args.reasoning_models, |v| Ok(list(v)))?;
        let max_tokens_caps = s.parse("max_tokens_caps", &args.max_tokens_caps, |v| {
            pairs(v, |cap| {
                cap.parse::<u64>()
                    .ok()
                    .filter(|&cap| cap > 0)
                    .ok_or_else(|| format!("{cap:?} is not a positive integer"))
            })
        })?;
        let proxy_api_keys = s.secret("PROXY_API_KEYS", |v| {
            let keys: Vec<Secret> = list(v).into_iter().map(Secret).collect();
            if keys.is_empty() {
                return Err("no keys in the list".to_owned());
            }
            if keys
                .iter()
                .any(|k| HeaderValue::try_from(k.expose()).is_err())
            {
                return Err("a key contains characters not allowed in a header".to_owned());
            }
            Ok(keys)
        })?;
        let upstream_timeout = Duration::from_secs(s.parse(
            "upstream_timeout_secs",
            &args.upstream_timeout_secs,
            |v| positive_integer(v, u64::MAX),
        )?);
        let body_limit = s.parse("body_limit_bytes", &args.body_limit_bytes, |v| {
            byte_size(v).and_then(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| "must be between 1 and the address space".to_owned())
            })
        })?;
        let header_read_timeout = s.parse(
            "header_read_timeout_secs",
            &args.header_read_timeout_secs,
            optional_seconds,
        )?;
        let body_read_timeout = s.parse(
            "body_read_timeout_secs",
            &args.body_read_timeout_secs,
            optional_seconds,
        )?;
        let body_rate = BodyRate::new()
            .first_byte(Duration::from_secs(s.parse(
                "body_first_byte_secs",
                &args.body_first_byte_secs,
                |v| positive_integer(v, u64::from(u32::MAX)),
            )?))
            .grace(Duration::from_secs(s.parse(
                "body_grace_secs",
                &args.body_grace_secs,
                whole_seconds,
            )?))
            .min_bytes_per_sec(s.parse("body_min_rate", &args.body_min_rate, byte_size)?)
            .max_gap(body_read_timeout);
        let idle_timeout = s.parse(
            "idle_timeout_secs",
            &args.idle_timeout_secs,
            optional_seconds,
        )?;
        let h2_ping_interval = s.parse(
            "h2_ping_interval_secs",
            &args.h2_ping_interval_secs,
            optional_seconds,
        )?;
        let h2_ping_timeout = Duration::from_secs(s.parse(
            "h2_ping_timeout_secs",
            &args.h2_ping_timeout_secs,
            |v| positive_integer(v, u64::from(u32::MAX)),
        )?);
        let stream_max = s.parse("stream_max_secs", &args.stream_max_secs, optional_seconds)?;
        let max_json_depth = s.parse("max_json_depth", &args.max_json_depth, |v| {
            positive_integer(v, 16_384).map(|n| n as usize)
        })?;
        let allowed_origins = s.parse("allowed_origins", &args.allowed_origins, |v| {
            let origins = list(v);
            match origins.iter().find(|o| {
                !(o.starts_with("http://") || o.starts_with("https://")) || o.contains('*')
            }) {
                Some(bad) => Err(format!(
                    "{bad:?} is not an origin such as https://app.example.com"
                )),
                None => Ok(origins),
            }
        })?;
        let allowed_hosts = s.parse("allowed_hosts", &args.allowed_hosts, |v| {
            let hosts = list(v);
            match hosts.iter().find(|h| h.contains('/') || h.contains('*')) {
                Some(bad) => Err(format!("{bad:?} is not a host name such as proxy.internal")),
                None => Ok(hosts),
            }
        })?;
        let shutdown_grace = Duration::from_secs(s.parse(
            "shutdown_grace_secs",
            &args.shutdown_grace_secs,
            |v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| "not a whole number of seconds".to_owned())
            },
        )?);
        let log_filter = s.parse("log_level", &args.log_level, |v| {
            tracing_subscriber::EnvFilter::try_new(v.trim())
                .map(|_| v.trim().to_owned())
                .map_err(|err| format!("not a log filter: {err}"))
        })?;
        let cool_down = Duration::from_secs(s.parse(
            "backend_cool_down_secs",
            &args.backend_cool_down_secs,
            |v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| "not a whole number of seconds".to_owned())
            },
        )?);
        let otlp = otlp_settings(s)?;
        let routing = s.file.as_ref().and_then(|file| file.routing.clone());
        let cache = CacheSettings {
            enabled: s.parse("cache_enabled", &args.cache_enabled, boolean)?,
            ttl_secs: s.parse("cache_ttl_secs", &args.cache_ttl_secs, |v| {
                positive_integer(v, 86_400)
            })?,
            max_entries: s.parse("cache_max_entries", &args.cache_max_entries, |v| {
                positive_integer(v, u64::MAX)
            })?,
            max_bytes: s.parse("cache_max_bytes", &args.cache_max_bytes, |v| {
                byte_size(v).and_then(|n| {
                    if n > 0 {
                        Ok(n)
                    } else {
                        Err("must be at least 1".to_owned())
                    }
                })
            })?,
            redis_url: s.secret("REDIS_URL", |v| {
                let v = v.trim();
                let scheme = v.split_once("://").map(|(scheme, _)| scheme);
                if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
                    return Err("must start with redis:// or rediss://".to_owned());
                }
                Ok(Secret(v.to_owned()))
            })?,
        };
        Ok(Self {
            listen,
            upstream,
            wire,
            openai_api_key,
            big_model,
            small_model,
            explicit_model_map,
            model_map,
            reasoning_models,
            max_tokens_caps,
            proxy_api_keys,
            upstream_timeout,
            body_limit,
            header_read_timeout,
            body_read_timeout,
            body_rate,
            idle_timeout,
            h2_ping_interval,
            h2_ping_timeout,
            stream_max,
            max_json_depth,
            allowed_origins,
            allowed_hosts,
            shutdown_grace,
            log_filter,
            cache,
            routing,
            cool_down,
            otlp,
        })
    }
}

fn whole_seconds(v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| "not a whole number of seconds".to_owned())
}

/// `0` = no limit.
fn optional_seconds(v: &str) -> Result<Option<Duration>, String> {
    v.trim()
        .parse::<u64>()
        .map(|secs| (secs > 0).then(|| Duration::from_secs(secs)))
        .map_err(|_| "not a whole number of seconds".to_owned())
}

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for where it is actually used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The upstream base URL, split once at startup.
#[derive(Clone, Debug)]
pub struct UpstreamUrl {
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    pub(super) base_path: String,
    pub(super) base_query: Option<String>,
}

impl fmt::Display for UpstreamUrl {
    /// Scheme, host and path: the query is left out (some providers put keys there).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl UpstreamUrl {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|err| format!("not a URL ({err}), expected e.g. https://api.openai.com/v1"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err("the URL must start with http:// or https://".to_owned()),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("put credentials in OPENAI_API_KEY, not in the URL".to_owned());
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            base_query: uri.query().map(str::to_owned),
        })
    }
}

/// Response cache settings, handed to the cache layer.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// Whether the cache layer is in the stack at all.
    pub enabled: bool,
    /// Default time to live of an entry, in seconds.
    pub ttl_secs: u64,
    /// Maximum number of entries in memory.
    pub max_entries: u64,
    /// Maximum total size of the entries in memory, in bytes.
    pub max_bytes: u64,
    /// The shared Redis tier, when configured (may contain a password).
    pub redis_url: Option<Secret>,
}

impl CacheSettings {
    pub(super) fn describe(&self) -> String {
        if !self.enabled {
            return "off".to_owned();
        }
        format!(
            "on (ttl {} s, {} entries, {} bytes{})",
            self.ttl_secs,
            self.max_entries,
            self.max_bytes,
            if self.redis_url.is_some() {
                ", redis tier"
            } else {
                ""
            }
        )
    }
}

/// Everything the proxy is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The OpenAI-compatible backend.
    pub upstream: UpstreamUrl,
    /// The API the backend speaks.
    pub wire: Wire,
    /// Sent upstream as `Authorization: Bearer`; optional for local backends.
    pub openai_api_key: Option<Secret>,
    /// Upstream model for `sonnet`/`opus`/other `claude` names.
    pub big_model: String,
    /// Upstream model for `haiku` names.
    pub small_model: String,
    /// The `MODEL_MAP` rules alone, as given.
    pub explicit_model_map: Vec<(String, String)>,
    /// Every mapping rule in order (`MODEL_MAP`, then the defaults): the first rule whose
    /// pattern is a substring of the client's model wins; a name no rule matches is sent as is.
    pub model_map: ModelMap,
    /// Prefixes of upstream models that take `max_completion_tokens` and `developer` messages.
    pub reasoning_models: Vec<String>,
    /// Caps on `max_tokens` by upstream model name prefix (the longest matching prefix wins).
    pub max_tokens_caps: Vec<(String, u64)>,
    /// Keys clients must present; `None` lets everyone in.
    pub proxy_api_keys: Option<Vec<Secret>>,
    /// How long to wait for the upstream's response head.
    pub upstream_timeout: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// How long a client may take to send the request head (HTTP/1); `None` disables it.
    pub header_read_timeout: Option<Duration>,
    /// The longest pause between two pieces of a request body (408 after it); `None`
    /// disables it. Also in [`Config::body_rate`].
    pub body_read_timeout: Option<Duration>,
    /// How fast a request body must arrive: first byte, grace, minimum rate, longest pause.
    pub body_rate: BodyRate,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Option<Duration>,
    /// How often HTTP/2 connections are pinged.
    pub h2_ping_interval: Option<Duration>,
    /// How long an HTTP/2 client has to answer a ping.
    pub h2_ping_timeout: Duration,
    /// The longest a streamed answer may last in total.
    pub stream_max: Option<Duration>,
    /// The deepest JSON nesting accepted in a request.
    pub max_json_depth: usize,
    /// Origins a browser may call the proxy from.
    pub allowed_origins: Vec<String>,
    /// Host names served besides loopback names and the listen address.
    pub allowed_hosts: Vec<String>,
    /// How long open requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `tower_llm_bridge=debug`.
    pub log_filter: String,
    /// Response cache settings.
    pub cache: CacheSettings,
    /// The backends and routes of the configuration file; `None`: one backend from
    /// `OPENAI_BASE_URL` and the model rules of `BIG_MODEL`, `SMALL_MODEL` and `MODEL_MAP`.
    pub routing: Option<Routing>,
    /// How long a failed backend is skipped while another target of its route is available.
    pub cool_down: Duration,
    /// Where spans are exported over OTLP (the standard `OTEL_*` variables); `None` when no
    /// endpoint is set. Used by builds with the `otel` feature; others warn once.
    pub otlp: Option<OtlpSettings>,
}

/// The OTLP/HTTP exporter's settings, from the OpenTelemetry SDK's standard variables.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// The URL spans are posted to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub traces_endpoint: Uri,
    /// Which variable named it (for the startup log).
    pub source: &'static str,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`), values decoded; they may carry a collector token.
    pub headers: Vec<(String, Secret)>,
    /// The longest one export may take (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds; 10 s).
    pub timeout: Duration,
    /// `service.name`: `OTEL_SERVICE_NAME`, else a `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `llm-bridge`.
    pub service_name: String,
}

/// The signal-specific variable if set, else the general one: the SDK's precedence.
fn otel_var(s: &Sources<'_>, what: &str) -> Option<(&'static str, String)> {
    let (specific, general): (&'static str, &'static str) = match what {
        "ENDPOINT" => (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        "HEADERS" => (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        "TIMEOUT" => (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        _ => (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    };
    s.var(specific)
        .map(|v| (specific, v))
        .or_else(|| s.var(general).map(|v| (general, v)))
}

/// The OTLP settings, `None` without an endpoint or with `OTEL_SDK_DISABLED=true`.
fn otlp_settings(s: &Sources<'_>) -> Result<Option<OtlpSettings>, ConfigError> {
    let Some((source, endpoint)) = otel_var(s, "ENDPOINT") else {
        return Ok(None);
    };
    if s.var("OTEL_SDK_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let endpoint = endpoint.trim();
    let url = if source == "OTEL_EXPORTER_OTLP_ENDPOINT" {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_owned()
    };
    let traces_endpoint = url
        .parse::<Uri>()
        .ok()
        .filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        })
        .ok_or_else(|| {
            let why = "not a URL such as http://127.0.0.1:4318";
            // A URL with user:password@ is not repeated into logs.
            if endpoint.contains('@') {
                ConfigError(format!("{source}: {why}"))
            } else {
                bad(source, endpoint, why)
            }
        })?;
    if let Some((name, protocol)) = otel_var(s, "PROTOCOL")
        && protocol.trim() != "http/protobuf"
    {
        return Err(bad(
            name,
            &protocol,
            "this proxy exports OTLP over http/protobuf only",
        ));
    }
    let headers = match otel_var(s, "HEADERS") {
        None => Vec::new(),
        Some((name, value)) => {
            otlp_headers(&value).map_err(|why| ConfigError(format!("{name}: {why}")))?
        }
    };
    let timeout = match otel_var(s, "TIMEOUT") {
        None => Duration::from_secs(10),
        Some((name, value)) => Duration::from_millis(
            positive_integer(&value, u64::from(u32::MAX)).map_err(|why| bad(name, &value, &why))?,
        ),
    };
    let service_name = s
        .var("OTEL_SERVICE_NAME")
        .map(|v| v.trim().to_owned())
        .or_else(|| {
            s.var("OTEL_RESOURCE_ATTRIBUTES").and_then(|attributes| {
                attributes.split(',').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key.trim() == "service.name").then(|| percent_decode(value.trim()))?
                })
            })
        })
        .unwrap_or_else(|| "llm-bridge".to_owned());
    Ok(Some(OtlpSettings {
        traces_endpoint,
        source,
        headers,
        timeout,
        service_name,
    }))
}

/// `k=v,k2=v2` with URL-encoded values (the W3C baggage format the OTLP variables use). The
/// values may be credentials: errors say which entry, never what it holds.
fn otlp_headers(value: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut headers = Vec::new();
    for (index, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {} is not key=value", index + 1))?;
        let name = name.trim().to_ascii_lowercase();
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("the value of {name:?} is not URL-encoded UTF-8"))?;
        if http::HeaderName::try_from(name.as_str()).is_err() {
            return Err(format!("entry {} is not a header name", index + 1));
        }
        if HeaderValue::try_from(value.as_str()).is_err() {
            return Err(format!(
                "the value of {name:?} has characters not allowed in a header"
            ));
        }
        headers.push((name, Secret(value)));
    }
    Ok(headers)
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Config {
    /// The upstream model for a client's model name (see [`Config::model_map`]; patterns
    /// match ignoring ASCII case, as the translation layer's `ModelMap::contains` does).
    pub fn map_model<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.model_map.map(client_model)
    }
}

/// The OpenAI API the backend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Chat Completions: `POST <url>/chat/completions`.
    Chat,
    /// The Responses API: `POST <url>/responses`.
    Responses,
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chat => "chat",
            Self::Responses => "responses",
        })
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the proxy.
    Run(Box<Config>),
    /// Print this text and exit.
    Help(String),
}

/// A setting that cannot be used; `main` prints it and exits with status 2.
#[derive(Debug)]
pub struct ConfigError(String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn model_name(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not a model name".to_owned());
    }
    Ok(v.to_owned())
}

/// `a, b,,c` → `["a", "b", "c"]`.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `k=v,k2=v2` → pairs, in order.
fn pairs<T>(
    v: &str,
    parse_value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    list(v)
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            Ok((key.to_owned(), parse_value(value)?))
        })
        .collect()
}

fn positive_integer(v: &str, max: u64) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ if max == u64::MAX => Err("not a positive integer".to_owned()),
        _ => Err(format!("not an integer between 1 and {max}")),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not true or false".to_owned()),
    }
}

/// `1048576`, `512KiB`, `32MiB`, `1GiB` (K/M/G and KB/MB/GB are read as binary units too).
fn byte_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err("not a size such as 1048576 or 32MiB".to_owned()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| "not a size such as 1048576 or 32MiB".to_owned())
}
