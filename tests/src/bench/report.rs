//! What one scenario measured, the gateway process's CPU time and memory read from `/proc`, the
//! human table on stdout and the JSON file written by `--json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on every Linux we run on).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds a process has used so far (`utime + stime` of `/proc/<pid>/stat`).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields we want follow its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A `kB` figure of `/proc/<pid>/status` (`VmHWM` is the peak resident set, `VmRSS` the current one),
/// in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: f64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// What the drivers watch: the server process and, on PostgreSQL, the server's backends that serve
/// the scenario's database (they run on this machine, so their CPU time is in `/proc` too).
#[derive(Debug, Clone)]
pub struct Probe {
    pub pid: u32,
    /// The admin URL and the name of the scenario's PostgreSQL database.
    pub postgres: Option<(String, String)>,
}

/// CPU seconds at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub server: Option<f64>,
    pub database: Option<f64>,
}

impl Probe {
    /// A probe of one process.
    pub fn process(pid: u32) -> Probe {
        Probe { pid, postgres: None }
    }

    /// The CPU seconds used so far by the server and by the database's backends.
    pub async fn sample(&self) -> CpuSample {
        let database = match &self.postgres {
            Some((admin, name)) => postgres_cpu(admin, name).await,
            None => None,
        };
        CpuSample { server: cpu_secs(self.pid), database }
    }
}

/// The CPU seconds of the PostgreSQL backends connected to database `name`.
async fn postgres_cpu(admin: &str, name: &str) -> Option<f64> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
    let rows = sqlx::query("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_all(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(rows.iter().filter_map(|r| r.try_get::<i32, _>(0).ok()).filter_map(|pid| cpu_secs(pid as u32)).sum())
}

/// The figures of one scenario (or one phase of it, such as `e2e` at half rate).
#[derive(Debug, Clone)]
pub struct Figures {
    /// The key in the table and in the JSON file.
    pub name: String,
    /// Operations completed inside the measured window.
    pub ops: u64,
    /// Operations that failed inside the measured window.
    pub errors: u64,
    /// The first failure, so a broken scenario says why.
    pub first_error: Option<String>,
    /// The measured window (warm-up excluded).
    pub window: Duration,
    /// Latency of the completed operations, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU seconds of the server process (gateway, or echo server for `baseline`) over the window.
    pub server_cpu_s: Option<f64>,
    /// On PostgreSQL: CPU seconds of the backends serving the scenario's database over the window.
    pub database_cpu_s: Option<f64>,
    /// Peak resident set of the server process since it started (`VmHWM`), in MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// Extra figures (for example deliveries per second, or RSS with every stream connected).
    pub extra: BTreeMap<String, Value>,
    /// Set once the whole run is known.
    pub ratio_to_baseline: Option<f64>,
}

impl Figures {
    /// Operations per second over the window.
    pub fn throughput(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 { self.ops as f64 / secs } else { 0.0 }
    }

    fn ms(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }

    fn max_ms(&self) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1000.0)
    }

    /// Server CPU milliseconds per completed operation.
    fn cpu_ms_per_op(&self) -> Option<f64> {
        self.server_cpu_s.filter(|_| self.ops > 0).map(|c| c * 1000.0 / self.ops as f64)
    }

    /// The JSON object for this scenario.
    pub fn to_json(&self) -> Value {
        let round = |v: Option<f64>, places: i32| {
            v.map(|x| {
                let f = 10f64.powi(places);
                (x * f).round() / f
            })
        };
        let mut o = json!({
            "throughput_per_s": round(Some(self.throughput()), 1),
            "ops": self.ops,
            "errors": self.errors,
            "window_s": round(Some(self.window.as_secs_f64()), 3),
            "latency_ms": {
                "p50": round(self.ms(0.50), 3),
                "p90": round(self.ms(0.90), 3),
                "p99": round(self.ms(0.99), 3),
                "max": round(self.max_ms(), 3),
            },
            "gateway_cpu_s": round(self.server_cpu_s, 3),
            "gateway_cpu_ms_per_op": round(self.cpu_ms_per_op(), 4),
            "gateway_peak_rss_mib": round(self.server_peak_rss_mib, 1),
            "postgres_cpu_s": round(self.database_cpu_s, 3),
            "ratio_to_baseline": round(self.ratio_to_baseline, 3),
        });
        if let (Some(e), Value::Object(map)) = (&self.first_error, &mut o) {
            map.insert("first_error".into(), Value::String(e.clone()));
        }
        if let Value::Object(map) = &mut o {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        o
    }
}

fn cell(v: Option<f64>, places: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.places$}"))
}

/// The table printed at the end of a run.
pub fn table(figures: &[Figures]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}\n",
        "scenario",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "gw CPU s",
        "CPU ms/op",
        "pg CPU s",
        "peak MiB",
        "×baseline",
        "errors"
    ));
    for f in figures {
        out.push_str(&format!(
            "{:<14} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}\n",
            f.name,
            f.throughput(),
            cell(f.ms(0.50), 2),
            cell(f.ms(0.90), 2),
            cell(f.ms(0.99), 2),
            cell(f.max_ms(), 2),
            cell(f.server_cpu_s, 2),
            cell(f.cpu_ms_per_op(), 3),
            cell(f.database_cpu_s, 2),
            cell(f.server_peak_rss_mib, 1),
            cell(f.ratio_to_baseline, 2),
            f.errors,
        ));
    }
    for f in figures {
        if !f.extra.is_empty() {
            let notes: Vec<String> = f.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("  {}: {}\n", f.name, notes.join(", ")));
        }
        if let Some(e) = &f.first_error {
            out.push_str(&format!("  {}: {} error(s), first: {e}\n", f.name, f.errors));
        }
    }
    out
}

/// Writes the figures to `path`, keyed by scenario name.
pub fn write_json(path: &Path, figures: &[Figures], run: Value) -> anyhow::Result<()> {
    let mut map = serde_json::Map::new();
    for f in figures {
        let mut o = f.to_json();
        if let (Value::Object(m), Value::Object(r)) = (&mut o, &run) {
            for (k, v) in r {
                m.insert(k.clone(), v.clone());
            }
        }
        map.insert(f.name.clone(), o);
    }
    let text = serde_json::to_string_pretty(&Value::Object(map))?;
    std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
