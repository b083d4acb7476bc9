//! `trivy-ecr doctor`: checks, before a pipeline depends on it, everything a scan through
//! trivy-ecr needs — the real trivy and what its command line takes, every mirror of every chain
//! (credentials, token, manifest, latency, the registry's rate-limit headers) and the DB cache —
//! and prints one verdict per line with the fix. It never downloads a DB, never writes, and is
//! bounded in time, so it is safe as a first CI step.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;

use crate::checks_bundle;
use crate::db_cache::{self, DbLocation, Staleness};
use crate::degraded::{self, NoFallback};
use crate::docker_config::DockerConfig;
use crate::exit_status::ExitStatus;
use crate::invocation::{ChoiceSource, Env, Invocation};
use crate::locate;
use crate::mirrors::DbKind;
use crate::options::{Options, parse_duration};
use crate::registry_client::{
    FetchError, ManifestProbe, ProbeAuth, ProbeFailure, ProbeStep, Reference, RegistryClient,
    Timeouts, TransportKind,
};
use crate::trivy_version::{Capabilities, TrivyVersion};

#[derive(Debug, Parser)]
#[command(
    name = "trivy-ecr doctor",
    about = "Check trivy, every DB mirror and the cache; one verdict per line (ok, warn, FAIL)"
)]
struct DoctorArgs {
    /// trivy's cache directory (default: --cache-dir, TRIVY_CACHE_DIR, trivy.yaml, ~/.cache/trivy).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Skip TLS certificate checks and fall back to plain HTTP, as scans with --insecure do
    /// (also on with TRIVY_INSECURE or trivy.yaml's insecure).
    #[arg(long)]
    insecure: bool,
    /// Give up on one request after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// Scans work, but something is slower, weaker or closer to failing than it should be.
    Warn,
    /// Something scans need is broken, or a setting points at something that does not work.
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One printed line: the verdict, what was checked, what was found, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    pub subject: String,
    pub detail: String,
    pub fix: Option<String>,
}

impl Line {
    fn new(verdict: Verdict, subject: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            verdict,
            subject: subject.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Line {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {}: {}", self.verdict, self.subject, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Where a chain comes from when nobody configured one.
const DEFAULT_CHAIN: &str = "the default chain";

/// How long `trivy --version` may take.
const TRIVY_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `trivy-ecr doctor ARGS` (args after `doctor`): prints the lines on stdout and ends with
/// 0 when no line is FAIL, else [`ExitStatus::ProblemsFound`].
pub async fn run(
    args: &[OsString],
    invocation: &Invocation,
    options: &Options,
    env: Env<'_>,
) -> ExitStatus {
    let parsed: DoctorArgs = match crate::help::parse_command("doctor", args) {
        Ok(parsed) => parsed,
        Err(status) => return status,
    };
    let parsed = DoctorArgs {
        insecure: parsed.insecure || invocation.insecure,
        ..parsed
    };
    let started = Instant::now();
    let mut lines = Vec::new();
    // A closed stdout (`doctor | head`) ends the output, not the process.
    let mut emit = |new: Vec<Line>| {
        for line in new {
            let _ = writeln!(std::io::stdout(), "{line}");
            lines.push(line);
        }
    };

    emit(check_trivy(options, env).await);

    let docker = DockerConfig::load(env);
    emit(vec![docker_config_line(&docker, env)]);
    let chains = chains(invocation, options, env);
    let credentials = credential_sources(&chains, &docker).await;
    let probes = probe_all(&chains, &parsed, &docker).await;
    for chain in &chains {
        let mut answering = 0;
        let mut chain_lines = Vec::new();
        for mirror in &chain.mirrors {
            let registry = mirror.reference.as_ref().ok().map(|r| r.registry.clone());
            if let Some(registry) = &registry {
                chain_lines.push(credentials_line(
                    chain.kind,
                    &mirror.text,
                    registry,
                    credentials.get(registry),
                ));
            }
            let outcome = probes.get(&(chain.kind, mirror.text.clone()));
            let (mirror_lines, answers) =
                judge_mirror(chain.kind, mirror, outcome, chain.source, parsed.timeout);
            answering += usize::from(answers);
            chain_lines.extend(mirror_lines);
        }
        chain_lines.push(judge_chain(chain, answering));
        emit(chain_lines);
    }

    let cache_dir = parsed
        .cache_dir
        .clone()
        .unwrap_or_else(|| crate::prefetch::cache_dir(invocation, env));
    emit(check_cache(
        &cache_dir,
        SystemTime::now(),
        options.max_db_age,
    ));

    let count = |v: Verdict| lines.iter().filter(|l| l.verdict == v).count();
    let (fails, warns, oks) = (
        count(Verdict::Fail),
        count(Verdict::Warn),
        count(Verdict::Ok),
    );
    let _ = writeln!(
        std::io::stdout(),
        "doctor: {fails} FAIL, {warns} warn, {oks} ok in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if fails > 0 {
        ExitStatus::ProblemsFound
    } else {
        ExitStatus::Success
    }
}

// ---- trivy ----

async fn check_trivy(options: &Options, env: Env<'_>) -> Vec<Line> {
    let depth = locate::nesting(env(locate::NESTING_VAR));
    let own_exe = std::env::current_exe().ok();
    let found = locate::check_nesting(depth).and_then(|()| {
        locate::find_trivy(options.trivy.as_deref(), env("PATH"), own_exe.as_deref())
    });
    let path = match found {
        Ok(path) => path,
        Err(err) => return vec![Line::new(Verdict::Fail, "trivy", err.to_string())],
    };
    let version = trivy_version(&path, depth).await;
    vec![judge_trivy(&path, version)]
}

/// `trivy --version`, bounded in time; the child counts as nested, so a `trivy` that is a
/// script calling trivy-ecr again cannot loop.
async fn trivy_version(path: &Path, depth: u32) -> Result<Option<TrivyVersion>, String> {
    let child = tokio::process::Command::new(path)
        .arg("--version")
        .env(locate::NESTING_VAR, (depth + 1).to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(TRIVY_VERSION_TIMEOUT, child).await {
        Err(_) => Err(format!(
            "'{} --version' did not answer within {}s",
            path.display(),
            TRIVY_VERSION_TIMEOUT.as_secs()
        )),
        Ok(Err(err)) => Err(format!("cannot run {}: {err}", path.display())),
        Ok(Ok(output)) => Ok(TrivyVersion::parse(&String::from_utf8_lossy(
            &output.stdout,
        ))),
    }
}

/// The trivy line: found, which version, and whether it takes a mirror list per flag.
pub fn judge_trivy(path: &Path, version: Result<Option<TrivyVersion>, String>) -> Line {
    let shown = path.display();
    match version {
        Err(why) => Line::new(Verdict::Fail, "trivy", why).fix(
            "reinstall trivy, or point TRIVY_ECR_TRIVY at a working trivy binary",
        ),
        Ok(None) => Line::new(
            Verdict::Warn,
            "trivy",
            format!("{shown}: cannot read its version from 'trivy --version'; trivy-ecr assumes a current trivy"),
        )
        .fix("check that TRIVY_ECR_TRIVY or PATH names the real trivy"),
        Ok(Some(v)) => {
            let caps = Capabilities::of(Some(v));
            let version = format!("{}.{}.{}", v.major, v.minor, v.patch);
            if !caps.multiple_repositories {
                Line::new(
                    Verdict::Warn,
                    "trivy",
                    format!("{shown}, version {version}: takes one repository per --db-repository, so trivy-ecr passes one mirror per run and fails over by running trivy again"),
                )
                .fix("upgrade trivy to 0.56 or newer")
            } else {
                Line::new(
                    Verdict::Ok,
                    "trivy",
                    format!("{shown}, version {version}: takes mirror lists (--db-repository a,b)"),
                )
            }
        }
    }
}

// ---- mirrors ----

/// One repository of a chain, as configured and as parsed.
#[derive(Debug)]
pub struct Mirror {
    pub text: String,
    pub reference: Result<Reference, String>,
}

/// The chain a scan would use for one DB, and where it was configured.
#[derive(Debug)]
pub struct Chain {
    pub kind: DbKind,
    pub source: &'static str,
    pub mirrors: Vec<Mirror>,
}

/// The chains scans would use: the user's own repositories for trivy (flag, `TRIVY_*`,
/// trivy.yaml) where given, else trivy-ecr's.
fn chains(invocation: &Invocation, options: &Options, env: Env<'_>) -> Vec<Chain> {
    [DbKind::Vulnerability, DbKind::Java, DbKind::Checks]
        .into_iter()
        .map(|kind| {
            let (repositories, source) = match invocation.choice(kind) {
                Some(choice) => (
                    choice.repositories.clone(),
                    match choice.source {
                        ChoiceSource::Flag => "your trivy flag",
                        ChoiceSource::Env => kind.env_var(),
                        ChoiceSource::ConfigFile => "trivy's config file",
                    },
                ),
                None => {
                    let own = own_setting(kind);
                    let configured = env(own).is_some_and(|v| !v.is_empty());
                    (
                        options.repositories(kind),
                        if configured { own } else { DEFAULT_CHAIN },
                    )
                }
            };
            let mirrors = repositories
                .into_iter()
                .map(|text| Mirror {
                    reference: Reference::parse(&text, kind.schema_tag()),
                    text,
                })
                .collect();
            Chain {
                kind,
                source,
                mirrors,
            }
        })
        .collect()
}

fn own_setting(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "TRIVY_ECR_DB_REPOSITORIES",
        DbKind::Java => "TRIVY_ECR_JAVA_DB_REPOSITORIES",
        DbKind::Checks => "TRIVY_ECR_CHECKS_REPOSITORIES",
    }
}

/// What the docker config offers for one registry: never the credentials, only where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    None,
    Found(PathBuf),
    /// The lookup (a credential helper) did not finish in time.
    TimedOut,
}

/// Where the docker config should be, as docker (and [`DockerConfig::load`]) looks for it.
fn docker_config_path(env: Env<'_>) -> Option<PathBuf> {
    env("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// Whether the docker config could be read (credentials for higher rate limits live there).
fn docker_config_line(docker: &DockerConfig, env: Env<'_>) -> Line {
    let subject = "docker config";
    match (&docker.path, docker_config_path(env)) {
        (Some(path), _) => Line::new(Verdict::Ok, subject, path.display().to_string()),
        (None, Some(path)) if path.exists() => Line::new(
            Verdict::Warn,
            subject,
            format!(
                "{} cannot be read; every registry is pulled from anonymously",
                path.display()
            ),
        )
        .fix("check that it is valid JSON (docker login rewrites it)"),
        (None, Some(path)) => Line::new(
            Verdict::Ok,
            subject,
            format!(
                "none ({} does not exist); every registry is pulled from anonymously",
                path.display()
            ),
        ),
        (None, None) => Line::new(
            Verdict::Ok,
            subject,
            "none (neither DOCKER_CONFIG nor HOME is set); every registry is pulled from anonymously",
        ),
    }
}

/// How long the credential lookups of all registries may take together.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Credential helpers may be slow (`docker-credential-ecr-login` asks AWS): all registries are
/// looked up on a blocking thread, within a bound.
async fn credential_sources(
    chains: &[Chain],
    docker: &DockerConfig,
) -> BTreeMap<String, CredentialSource> {
    let registries: Vec<String> = chains
        .iter()
        .flat_map(|c| &c.mirrors)
        .filter_map(|m| m.reference.as_ref().ok().map(|r| r.registry.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let lookup = {
        let registries = registries.clone();
        let config = docker.clone();
        tokio::task::spawn_blocking(move || {
            let path = config.path.clone().unwrap_or_default();
            registries
                .into_iter()
                .map(|registry| {
                    let source = match config.credentials(&registry) {
                        Some(_) => CredentialSource::Found(path.clone()),
                        None => CredentialSource::None,
                    };
                    (registry, source)
                })
                .collect::<BTreeMap<_, _>>()
        })
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, lookup).await {
        Ok(Ok(found)) => found,
        _ => registries
            .into_iter()
            .map(|r| (r, CredentialSource::TimedOut))
            .collect(),
    }
}

fn mirror_subject(kind: DbKind, text: &str) -> String {
    format!("{kind} mirror {text}")
}

fn credentials_line(
    kind: DbKind,
    text: &str,
    registry: &str,
    source: Option<&CredentialSource>,
) -> Line {
    let subject = mirror_subject(kind, text);
    match source {
        Some(CredentialSource::Found(path)) => Line::new(
            Verdict::Ok,
            subject,
            format!(
                "docker credentials: found for {registry} in {}",
                path.display()
            ),
        ),
        Some(CredentialSource::TimedOut) => Line::new(
            Verdict::Warn,
            subject,
            format!(
                "docker credentials: the lookup for {registry} did not finish within {}s",
                CREDENTIALS_TIMEOUT.as_secs()
            ),
        )
        .fix("check the credential helper named in the docker config (credHelpers, credsStore)"),
        _ if registry == "public.ecr.aws" => Line::new(
            Verdict::Ok,
            subject,
            "docker credentials: none, pulls anonymously (ECR Public: 1 pull/s anonymous, 10/s authenticated)",
        ),
        _ => Line::new(
            Verdict::Ok,
            subject,
            format!("docker credentials: none for {registry}, pulls anonymously"),
        ),
    }
}

/// What probing one mirror came to.
#[derive(Debug)]
pub enum ProbeOutcome {
    Answered(ManifestProbe),
    Failed(ProbeFailure),
    /// The whole probe took longer than its bound.
    TimedOut(Duration),
    /// Not probed: an earlier mirror on the same registry (named) got no answer.
    RegistryDown(String),
}

/// One mirror of one chain: the DB and the repository as configured.
type MirrorKey = (DbKind, String);

/// How long all probes may take together.
const PROBES_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two requests to one registry, so doctor itself stays under a limit of one pull a
/// second (ECR Public, anonymous). Loopback registries are not spaced.
const SAME_REGISTRY_SPACING: Duration = Duration::from_secs(1);

/// Probes every mirror of every chain: registries at once, the mirrors of one registry one
/// after the other; each mirror within a bound, and all within [`PROBES_TIMEOUT`]. Results
/// are keyed by DB and repository text.
async fn probe_all(
    chains: &[Chain],
    args: &DoctorArgs,
    docker: &DockerConfig,
) -> HashMap<MirrorKey, ProbeOutcome> {
    let timeouts = Timeouts {
        connect: args.timeout,
        read: args.timeout,
    };
    // Token, manifest, and GET where HEAD is refused.
    let bound = args.timeout * 3 + Duration::from_secs(2);
    let mut by_registry: BTreeMap<String, Vec<(MirrorKey, Reference)>> = BTreeMap::new();
    for chain in chains {
        for mirror in &chain.mirrors {
            if let Ok(reference) = &mirror.reference {
                by_registry
                    .entry(reference.registry.clone())
                    .or_default()
                    .push(((chain.kind, mirror.text.clone()), reference.clone()));
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, mirrors) in by_registry {
        let docker = docker.clone();
        let insecure = args.insecure;
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            let mut client = match RegistryClient::new(docker, timeouts, insecure) {
                Ok(client) => client,
                Err(err) => {
                    for (key, _) in mirrors {
                        let error = FetchError::Transport(err.clone(), TransportKind::Other);
                        let failure = ProbeFailure {
                            step: ProbeStep::Manifest,
                            error,
                        };
                        outcomes.push((key, ProbeOutcome::Failed(failure)));
                    }
                    return outcomes;
                }
            };
            let mut down: Option<String> = None;
            for (index, (key, reference)) in mirrors.into_iter().enumerate() {
                if let Some(first) = &down {
                    outcomes.push((key, ProbeOutcome::RegistryDown(first.clone())));
                    continue;
                }
                if index > 0 && !reference.is_loopback() {
                    tokio::time::sleep(SAME_REGISTRY_SPACING).await;
                }
                let outcome =
                    match tokio::time::timeout(bound, client.probe_manifest(&reference)).await {
                        Ok(Ok(probe)) => ProbeOutcome::Answered(probe),
                        Ok(Err(failure)) => ProbeOutcome::Failed(failure),
                        Err(_) => ProbeOutcome::TimedOut(bound),
                    };
                if unreachable(&outcome) {
                    down = Some(key.1.clone());
                }
                outcomes.push((key, outcome));
            }
            outcomes
        });
    }
    let deadline = tokio::time::Instant::now() + PROBES_TIMEOUT;
    let mut outcomes = HashMap::new();
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Ok(done) = joined {
            outcomes.extend(done);
        }
    }
    outcomes
}

/// No answer at all from the registry: the next mirror on it would fare no better.
fn unreachable(outcome: &ProbeOutcome) -> bool {
    match outcome {
        ProbeOutcome::TimedOut(_) => true,
        ProbeOutcome::Failed(failure) => matches!(
            failure.error,
            FetchError::Transport(
                _,
                TransportKind::Refused | TransportKind::Dns | TransportKind::Timeout
            )
        ),
        _ => false,
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The token and manifest lines of one mirror, and whether it serves the artifact now.
pub fn judge_mirror(
    kind: DbKind,
    mirror: &Mirror,
    outcome: Option<&ProbeOutcome>,
    source: &str,
    timeout: Duration,
) -> (Vec<Line>, bool) {
    let subject = mirror_subject(kind, &mirror.text);
    let drop_it = if source == DEFAULT_CHAIN {
        format!("or set {} without it", own_setting(kind))
    } else {
        format!("or remove it from {source}")
    };
    let reference = match &mirror.reference {
        Ok(reference) => reference,
        Err(why) => {
            let line = Line::new(Verdict::Fail, subject, why.clone())
                .fix(format!("write it as HOST[:PORT]/PATH[:TAG] in {source}"));
            return (vec![line], false);
        }
    };
    let registry = &reference.registry;
    let login = format!("docker login {registry}");
    let probe = match outcome {
        None => {
            let line = Line::new(
                Verdict::Fail,
                subject,
                format!(
                    "not checked: the probes took longer than {}s together",
                    PROBES_TIMEOUT.as_secs()
                ),
            )
            .fix("run doctor with a shorter --timeout, or check the network");
            return (vec![line], false);
        }
        Some(ProbeOutcome::RegistryDown(first)) => {
            let line = Line::new(
                Verdict::Fail,
                subject,
                format!("not checked: {registry} did not answer for {first}"),
            )
            .fix(format!("see {first} above, {drop_it}"));
            return (vec![line], false);
        }
        Some(ProbeOutcome::TimedOut(bound)) => {
            let line = Line::new(
                Verdict::Fail,
                subject,
                format!("no answer within {}s", bound.as_secs()),
            )
            .fix(format!(
                "check that the network (proxy, firewall) lets this host reach {registry}, {drop_it}"
            ));
            return (vec![line], false);
        }
        Some(ProbeOutcome::Failed(failure)) => {
            let step = match failure.step {
                ProbeStep::Token => "token",
                ProbeStep::Manifest => "manifest",
            };
            let (verdict, what, fix) = describe_failure(&failure.error, registry, timeout);
            let line = Line::new(verdict, subject, format!("{step}: {what}"))
                .fix(format!("{fix}, {drop_it}"));
            return (vec![line], false);
        }
        Some(ProbeOutcome::Answered(probe)) => probe,
    };

    let mut lines = Vec::new();
    let token_time = probe.token_time.map(millis).unwrap_or_default();
    match probe.auth {
        // Without a success, whether a token would have been asked for is unknown.
        ProbeAuth::NotRequired if !(200..300).contains(&probe.status) => {}
        ProbeAuth::NotRequired => {
            lines.push(Line::new(Verdict::Ok, &subject, "token: none asked for"))
        }
        ProbeAuth::AnonymousToken => lines.push(Line::new(
            Verdict::Ok,
            &subject,
            format!("token: anonymous token in {token_time}"),
        )),
        ProbeAuth::CredentialsToken => lines.push(Line::new(
            Verdict::Ok,
            &subject,
            format!("token: with docker credentials in {token_time}"),
        )),
        ProbeAuth::CredentialsRefused => lines.push(
            Line::new(
                Verdict::Warn,
                &subject,
                format!("token: the token service refused the docker credentials; anonymous token in {token_time}"),
            )
            .fix(format!("{login} again (expired password or token?), or remove {registry} from the docker config")),
        ),
        ProbeAuth::Basic => lines.push(Line::new(
            Verdict::Ok,
            &subject,
            "token: basic auth with docker credentials",
        )),
        // The manifest line below says it: HTTP 401.
        ProbeAuth::NoCredentials => {}
    }

    let headers = if probe.rate_limit.is_empty() {
        String::new()
    } else {
        let shown: Vec<String> = probe
            .rate_limit
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!("; registry limits: {}", shown.join(", "))
    };
    let timing = format!(
        "{} {} in {}",
        probe.method,
        probe.status,
        millis(probe.time)
    );
    let status_detail = probe
        .error
        .as_ref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let line = match probe.status {
        200..=299 => {
            let exhausted = probe.rate_limit.iter().any(|(k, v)| {
                k.ends_with("remaining") && v.split(';').next().map(str::trim) == Some("0")
            });
            let digest = probe
                .digest
                .as_deref()
                .map(|d| format!(", {}", d.get(..19).unwrap_or(d)))
                .unwrap_or_default();
            let line = Line::new(
                if exhausted {
                    Verdict::Warn
                } else {
                    Verdict::Ok
                },
                &subject,
                format!("manifest: {timing}{digest}{headers}"),
            );
            if exhausted {
                line.fix(format!(
                    "the registry's limit is used up; {login} for a higher one, or put another mirror first"
                ))
            } else {
                line
            }
        }
        429 => {
            let after = probe
                .error
                .as_ref()
                .and_then(|e| match e {
                    FetchError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                })
                .map(|d| format!(", retry after {}", humantime::format_duration(d)))
                .unwrap_or_default();
            Line::new(
                Verdict::Warn,
                &subject,
                format!("manifest: {timing}: rate limited{after}{headers}"),
            )
            .fix(format!(
                "none needed now: trivy-ecr fails over to the next mirror and returns after the delay; {login} raises the limit where the registry counts per user"
            ))
        }
        500..=599 => Line::new(
            Verdict::Warn,
            &subject,
            format!("manifest: {timing}: server error{status_detail}{headers}"),
        )
        .fix("usually passes; trivy-ecr fails over to the next mirror meanwhile"),
        401 | 403 => {
            let why = if probe.auth == ProbeAuth::NoCredentials {
                "the registry wants credentials and the docker config has none for it"
            } else {
                "access denied"
            };
            Line::new(
                Verdict::Fail,
                &subject,
                format!("manifest: {timing}: {why}{status_detail}"),
            )
            .fix(format!(
                "{login}, check the repository is public, {drop_it}"
            ))
        }
        404 => Line::new(
            Verdict::Fail,
            &subject,
            format!("manifest: {timing}: no such repository or tag{status_detail}"),
        )
        .fix(format!(
            "check the repository and tag in {source}, {drop_it}"
        )),
        _ => Line::new(
            Verdict::Fail,
            &subject,
            format!("manifest: {timing}: unexpected answer{status_detail}{headers}"),
        )
        .fix(format!(
            "check that {registry} is an OCI registry, {drop_it}"
        )),
    };
    let answers = (200..300).contains(&probe.status);
    lines.push(line);
    (lines, answers)
}

/// A failed request: verdict, what happened, how to fix it.
fn describe_failure(
    error: &FetchError,
    registry: &str,
    timeout: Duration,
) -> (Verdict, String, String) {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    match error {
        FetchError::Transport(_, TransportKind::Refused) => (
            Verdict::Fail,
            format!("connection refused by {registry}"),
            "check the host and port".to_string(),
        ),
        FetchError::Transport(_, TransportKind::Dns) => (
            Verdict::Fail,
            format!("cannot resolve {host}"),
            "check the name and this host's DNS".to_string(),
        ),
        FetchError::Transport(_, TransportKind::Timeout) => (
            Verdict::Fail,
            format!("no answer within {}s", timeout.as_secs_f64()),
            format!("check that the network (proxy, firewall) lets this host reach {registry}"),
        ),
        FetchError::Transport(text, _) => (
            Verdict::Fail,
            text.chars().take(300).collect(),
            "check TLS (--insecure for a registry without a valid certificate) and the network"
                .to_string(),
        ),
        FetchError::Status { status: 429, .. } | FetchError::Status { status: 500.., .. } => (
            Verdict::Warn,
            error.to_string(),
            "usually passes; trivy-ecr fails over to the next mirror meanwhile".to_string(),
        ),
        other => (
            Verdict::Fail,
            other.to_string(),
            format!("check the registry's token service and docker login {registry}"),
        ),
    }
}

/// Whether scans can get this DB from the chain at all.
pub fn judge_chain(chain: &Chain, answering: usize) -> Line {
    let total = chain.mirrors.len();
    let subject = format!("{} chain", chain.kind);
    if answering > 0 {
        Line::new(
            Verdict::Ok,
            subject,
            format!(
                "{answering} of {total} mirrors serve it now (from {})",
                chain.source
            ),
        )
    } else {
        Line::new(
            Verdict::Fail,
            subject,
            format!(
                "none of {total} mirrors serves it now (from {}); scans that need it end with exit 3 unless the cache can stand in",
                chain.source
            ),
        )
        .fix(format!(
            "fix a mirror above, or set {} to mirrors this host can reach",
            own_setting(chain.kind)
        ))
    }
}

// ---- cache ----

/// The cache directory and each DB in it: fresh, stale, missing, damaged; and whether degraded
/// mode could fall back on it.
pub fn check_cache(cache_dir: &Path, now: SystemTime, max_db_age: Option<Duration>) -> Vec<Line> {
    let mut lines = vec![cache_dir_line(cache_dir)];
    for kind in [DbKind::Vulnerability, DbKind::Java, DbKind::Checks] {
        lines.push(cache_kind_line(cache_dir, kind, now, max_db_age));
    }
    lines
}

fn cache_dir_line(cache_dir: &Path) -> Line {
    let subject = "cache";
    let existing = cache_dir.ancestors().find(|p| p.exists());
    let writable = |p: &Path| {
        nix::unistd::access(
            p,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_ok()
    };
    match existing {
        Some(dir) if dir == cache_dir && dir.is_dir() && writable(dir) => Line::new(
            Verdict::Ok,
            subject,
            format!("{} (writable)", cache_dir.display()),
        ),
        Some(dir) if dir != cache_dir && dir.is_dir() && writable(dir) => Line::new(
            Verdict::Ok,
            subject,
            format!(
                "{} does not exist yet; the first download creates it",
                cache_dir.display()
            ),
        ),
        _ => Line::new(
            Verdict::Fail,
            subject,
            format!("{} is not a writable directory", cache_dir.display()),
        )
        .fix("set --cache-dir or TRIVY_CACHE_DIR to a writable directory"),
    }
}

fn cache_kind_line(
    cache_dir: &Path,
    kind: DbKind,
    now: SystemTime,
    max_db_age: Option<Duration>,
) -> Line {
    let subject = format!("{kind} cache");
    let location = DbLocation::new(cache_dir, kind);
    let state = match kind {
        DbKind::Checks => checks_bundle::staleness(&location, now),
        _ => db_cache::staleness(&location, now).map(|_| ()),
    };
    let fallback = degraded::fallback(kind, cache_dir, max_db_age, now);
    let fallback_text = match &fallback {
        Ok(d) => format!(
            "would stand in if every mirror failed ({} old, limit {})",
            degraded::short(d.age),
            degraded::short(d.limit)
        ),
        Err(why) => format!("no fallback if every mirror fails: {why}"),
    };
    match (state, &fallback) {
        (Ok(()), _) => Line::new(
            Verdict::Ok,
            subject,
            format!("fresh, trivy will not download it; {fallback_text}"),
        ),
        (Err(_), Err(NoFallback::Damaged(_))) => {
            Line::new(Verdict::Warn, subject, format!("damaged; {fallback_text}"))
                .fix(format!("trivy-ecr db pull{} replaces it", pull_flag(kind)))
        }
        (Err(Staleness::Missing), _) if kind != DbKind::Vulnerability => Line::new(
            Verdict::Ok,
            subject,
            "not cached; downloaded when a scan needs it",
        ),
        (Err(why), Ok(_)) => Line::new(
            Verdict::Ok,
            subject,
            format!("needs a download ({why}); {fallback_text}"),
        ),
        (Err(why), Err(_)) if kind == DbKind::Vulnerability => Line::new(
            Verdict::Warn,
            subject,
            format!("needs a download ({why}); {fallback_text}"),
        )
        .fix("keep the cache between CI runs, or warm it with trivy-ecr db pull"),
        (Err(why), Err(_)) => Line::new(
            Verdict::Ok,
            subject,
            format!("needs a download ({why}) when a scan needs it"),
        ),
    }
}

fn pull_flag(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Vulnerability => "",
        DbKind::Java => " --java",
        DbKind::Checks => " --checks",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(text: &str) -> Mirror {
        Mirror {
            text: text.into(),
            reference: Reference::parse(text, "2"),
        }
    }

    fn answered(status: u16, auth: ProbeAuth, error: Option<FetchError>) -> ProbeOutcome {
        ProbeOutcome::Answered(ManifestProbe {
            auth,
            token_time: Some(Duration::from_millis(3)),
            method: "HEAD",
            status,
            time: Duration::from_millis(7),
            rate_limit: vec![("ratelimit-remaining".into(), "0;w=21600".into())],
            digest: None,
            error,
        })
    }

    fn judge(outcome: &ProbeOutcome) -> (Vec<String>, bool) {
        let (lines, answers) = judge_mirror(
            DbKind::Vulnerability,
            &mirror("r.example/db:2"),
            Some(outcome),
            "the default chain",
            Duration::from_secs(5),
        );
        (lines.iter().map(Line::to_string).collect(), answers)
    }

    #[test]
    fn verdicts_per_answer() {
        let (lines, answers) = judge(&answered(200, ProbeAuth::AnonymousToken, None));
        assert!(answers);
        assert_eq!(
            lines[0],
            "ok    vulnerability DB mirror r.example/db:2: token: anonymous token in 3ms"
        );
        assert!(
            lines[1].starts_with("warn  vulnerability DB mirror r.example/db:2: manifest: HEAD 200 in 7ms; registry limits: ratelimit-remaining: 0;w=21600; fix: the registry's limit is used up"),
            "{}",
            lines[1]
        );

        let limited = FetchError::Status {
            status: 429,
            code: None,
            message: String::new(),
            retry_after: Some(Duration::from_secs(2)),
        };
        let (lines, answers) = judge(&answered(429, ProbeAuth::NotRequired, Some(limited)));
        assert!(!answers);
        assert!(
            lines.len() == 1
                && lines[0].starts_with("warn  ")
                && lines[0].contains("HEAD 429 in 7ms: rate limited, retry after 2s"),
            "{lines:?}"
        );

        let (lines, _) = judge(&answered(401, ProbeAuth::NoCredentials, None));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("FAIL  ") && lines[0].contains("docker login r.example"));

        let refused = ProbeOutcome::Failed(ProbeFailure {
            step: ProbeStep::Manifest,
            error: FetchError::Transport("tcp connect error".into(), TransportKind::Refused),
        });
        let (lines, answers) = judge(&refused);
        assert!(!answers);
        assert_eq!(
            lines,
            [
                "FAIL  vulnerability DB mirror r.example/db:2: manifest: connection refused by r.example; fix: check the host and port, or set TRIVY_ECR_DB_REPOSITORIES without it"
            ]
        );
    }

    #[test]
    fn a_chain_fails_only_when_no_mirror_serves() {
        let chain = Chain {
            kind: DbKind::Java,
            source: "TRIVY_ECR_JAVA_DB_REPOSITORIES",
            mirrors: vec![mirror("a.example/j:1"), mirror("b.example/j:1")],
        };
        assert_eq!(judge_chain(&chain, 1).verdict, Verdict::Ok);
        let line = judge_chain(&chain, 0);
        assert_eq!(line.verdict, Verdict::Fail);
        assert!(line.to_string().contains("none of 2 mirrors"), "{line}");
    }

    #[test]
    fn trivy_versions() {
        let path = Path::new("/opt/trivy");
        let v = |minor| {
            Ok(Some(TrivyVersion {
                major: 0,
                minor,
                patch: 0,
            }))
        };
        assert_eq!(judge_trivy(path, v(76)).verdict, Verdict::Ok);
        assert_eq!(judge_trivy(path, v(55)).verdict, Verdict::Warn);
        assert_eq!(judge_trivy(path, Ok(None)).verdict, Verdict::Warn);
        assert_eq!(
            judge_trivy(path, Err("cannot run".into())).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn cache_states() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let lines = check_cache(
            &dir.path().join("trivy"),
            now,
            Some(Duration::from_secs(3600)),
        );
        assert!(
            lines[0].detail.contains("does not exist yet"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1].verdict, Verdict::Warn, "{}", lines[1]);
        assert_eq!(lines[2].verdict, Verdict::Ok, "{}", lines[2]);
        let location = DbLocation::new(dir.path(), DbKind::Vulnerability);
        std::fs::create_dir_all(&location.dir).unwrap();
        std::fs::write(location.db_file(), b"not bolt").unwrap();
        std::fs::write(location.metadata_file(), br#"{"Version":2}"#).unwrap();
        let lines = check_cache(dir.path(), now, Some(Duration::from_secs(3600)));
        assert!(lines[0].detail.ends_with("(writable)"), "{}", lines[0]);
        assert!(lines[1].detail.starts_with("damaged"), "{}", lines[1]);
    }
}
