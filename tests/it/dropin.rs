//! vitalsd as a node_exporter drop-in, checked against the real thing: Debian's
//! prometheus-node-exporter and a real Prometheus on loopback, scraping both in the same run,
//! with Grafana dashboard 1860's panels and the node-mixin's rules as the judge
//! (tests/data/: the metric names each panel and rule reads, with their source commits).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use crate::support::{
    TestDaemon, TestPki,
    prometheus::{NodeExporter, Prometheus, get, https_client, scrape_job},
};

/// The panels of tests/data/node-exporter-full.panels: (id, title, each query's names).
fn panels() -> Vec<(u32, String, Vec<Vec<String>>)> {
    let text = include_str!("../data/node-exporter-full.panels");
    let mut out: Vec<(u32, String, Vec<Vec<String>>)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut fields = line.split('\t');
        let (id, title, names) = (fields.next(), fields.next(), fields.next());
        let (Some(id), Some(title), Some(names)) = (id, title, names) else {
            panic!("a bad line in the panels file: {line:?}");
        };
        let id: u32 = id.parse().unwrap();
        let names = names.split(' ').map(str::to_owned).collect();
        match out.iter_mut().find(|(i, ..)| *i == id) {
            Some((.., queries)) => queries.push(names),
            None => out.push((id, title.to_owned(), vec![names])),
        }
    }
    out
}

/// The rules of tests/data/node-mixin.rules: (name, the names it reads).
fn rules() -> Vec<(String, Vec<String>)> {
    include_str!("../data/node-mixin.rules")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, names) = l.split_once('\t').unwrap();
            (
                name.to_owned(),
                names.split(' ').map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// The panels a job fills: those with a query whose every name has a series.
fn filled(panels: &[(u32, String, Vec<Vec<String>>)], names: &BTreeSet<String>) -> BTreeSet<u32> {
    panels
        .iter()
        .filter(|(_, _, queries)| queries.iter().any(|q| q.iter().all(|n| names.contains(n))))
        .map(|(id, ..)| *id)
        .collect()
}

/// vitalsd (job `vitals`, over mutual TLS) and Debian's node_exporter (job `node`, with an
/// empty textfile directory) scraped by one Prometheus.
struct Beside {
    _textfiles: tempfile::TempDir,
    exporter: NodeExporter,
    daemon: TestDaemon,
    prometheus: Prometheus,
}

impl Beside {
    async fn start() -> Beside {
        let textfiles = tempfile::tempdir().unwrap();
        let exporter = NodeExporter::start(textfiles.path()).await;
        let daemon = TestDaemon::start("").await;
        let jobs = scrape_job(
            "vitals",
            &daemon.addr.to_string(),
            &daemon.pki,
            "client",
            false,
        ) + &exporter.job("node");
        let prometheus = Prometheus::start(&jobs, false).await;
        Beside {
            _textfiles: textfiles,
            exporter,
            daemon,
            prometheus,
        }
    }
}

/// Of the dashboard-1860 panels node_exporter fills on this machine, vitalsd fills at least
/// 95% (both scraped by one Prometheus, vitalsd over mutual TLS); every metric a node-mixin
/// rule reads that node_exporter serves here, vitalsd serves too; and each family both
/// serve has the same label names.
#[tokio::test]
async fn fills_the_dashboard_and_the_mixin_like_node_exporter() {
    let beside = Beside::start().await;
    let (exporter, daemon, prometheus) = (&beside.exporter, &beside.daemon, &beside.prometheus);
    let limit = Duration::from_secs(30);
    for job in ["vitals", "node"] {
        prometheus
            .wait_value(&format!("up{{job=\"{job}\"}}"), limit, |v| v == 1.0)
            .await;
    }
    // Two scrapes of each, so every family has been seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours = prometheus.names("vitals").await;
    let theirs = prometheus.names("node").await;

    let panels = panels();
    let by_them = filled(&panels, &theirs);
    let by_us = filled(&panels, &ours);
    let missed: Vec<_> = panels
        .iter()
        .filter(|(id, ..)| by_them.contains(id) && !by_us.contains(id))
        .map(|(id, title, _)| format!("{id} {title}"))
        .collect();
    let share = (by_them.len() - missed.len()) as f64 / by_them.len() as f64;
    eprintln!(
        "dropin: dashboard 1860: {} panels; node_exporter fills {}, vitalsd {} ({:.1}% of node_exporter's); vitalsd misses {missed:?}",
        panels.len(),
        by_them.len(),
        by_us.len(),
        share * 100.0
    );
    assert!(
        share >= 0.95,
        "vitalsd fills {share:.3} of node_exporter's panels: {missed:?}"
    );

    let mut absent = Vec::new();
    let mut not_here = Vec::new();
    for (rule, names) in rules() {
        for name in names {
            if theirs.contains(&name) && !ours.contains(&name) {
                absent.push(format!("{rule}: {name}"));
            } else if !theirs.contains(&name) && !ours.contains(&name) {
                not_here.push(format!("{rule}: {name}"));
            }
        }
    }
    eprintln!("dropin: node-mixin names neither exporter has on this machine: {not_here:?}");
    assert!(
        absent.is_empty(),
        "node-mixin names node_exporter serves and vitalsd does not: {absent:?}"
    );

    // Label names agree family by family.
    let page = get(
        &https_client(&daemon.addr.to_string(), &daemon.pki, "client", b"http/1.1"),
        "/metrics",
        &[],
    )
    .await
    .1;
    let ours = label_names(&String::from_utf8_lossy(&page));
    let theirs = label_names(&exporter.page().await);
    let differ: Vec<_> = ours
        .iter()
        .filter_map(|(name, labels)| {
            let other = theirs.iter().find(|(n, _)| n == name)?;
            (other.1 != *labels).then(|| format!("{name}: {labels:?} vs {:?}", other.1))
        })
        .collect();
    assert!(differ.is_empty(), "label names differ: {differ:#?}");
}

/// Each sample name of a text page with the label names its samples carry.
fn label_names(page: &str) -> Vec<(String, BTreeSet<Vec<String>>)> {
    let mut out: Vec<(String, BTreeSet<Vec<String>>)> = Vec::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let mut labels: Vec<String> = Vec::new();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.rfind('}').unwrap_or(line.len())];
            let mut rest = inner;
            while let Some((key, after)) = rest.split_once("=\"") {
                labels.push(key.trim_start_matches(',').to_owned());
                let mut escaped = false;
                let close = after
                    .char_indices()
                    .find(|&(_, c)| {
                        let end = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        end
                    })
                    .map_or(after.len(), |(i, _)| i + 1);
                rest = &after[close..];
            }
        }
        labels.sort();
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, sets)) => {
                sets.insert(labels);
            }
            None => out.push((name.to_owned(), BTreeSet::from([labels]))),
        }
    }
    out
}

/// Counters are as of the scrape: over 40 s, sum(rate(node_cpu_seconds_total[30s])) every
/// 2 s never exceeds the CPU count by more than 0.5% (all modes together are the CPUs'
/// time; serving the sampler's last sample, up to 5 s old, gave 1.78..2.14 on 2 CPUs), and
/// it spreads no more than node_exporter's in the same Prometheus, plus 1% of the CPUs.
/// (On a VM the kernel may account a little less than wall time: 1.98 CPUs of 2 here,
/// for node_exporter as for vitalsd.)
#[tokio::test]
async fn cpu_rate_stays_within_the_cpu_count() {
    let beside = Beside::start().await;
    let prometheus = &beside.prometheus;
    prometheus
        .wait_value("up{job=\"vitals\"}", Duration::from_secs(30), |v| v == 1.0)
        .await;
    tokio::time::sleep(Duration::from_secs(72)).await;
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as f64;
    let mut spreads = Vec::new();
    for job in ["node", "vitals"] {
        let rates = prometheus
            .range_values(
                &format!("sum(rate(node_cpu_seconds_total{{job=\"{job}\"}}[30s]))"),
                40,
                2,
            )
            .await;
        let (low, high) = rates
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        eprintln!(
            "dropin: {job}: sum(rate(node_cpu_seconds_total[30s])) over 40 s: {low:.4}..{high:.4} on {cpus} CPUs ({} points)",
            rates.len()
        );
        assert!(rates.len() >= 18, "{rates:?}");
        assert!(
            low >= 0.0 && high <= cpus * 1.005,
            "{job}: {low}..{high} on {cpus} CPUs: {rates:?}"
        );
        spreads.push(high - low);
    }
    assert!(
        spreads[1] <= spreads[0] + cpus * 0.01,
        "vitalsd's rate spreads {} where node_exporter's spreads {}",
        spreads[1],
        spreads[0]
    );
}

/// The textfile collector treats a directory as node_exporter does, both reading the same
/// files: the good file's series are served by both, the bad ones (a parse error, a
/// timestamp) by neither, and node_textfile_scrape_error is 1 in both, 0 once the bad
/// files are gone; node_textfile_mtime_seconds names each file read.
#[tokio::test]
async fn textfiles_are_read_like_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "apt.prom",
        "# HELP apt_upgrades_pending Apt packages pending updates by origin.\n# TYPE apt_upgrades_pending gauge\napt_upgrades_pending{arch=\"all\",origin=\"Debian\"} 3\n",
    );
    write("broken.prom", "this is { not a metric\n");
    write("stamped.prom", "stamped_metric 1 1700000000000\n");
    let exporter = NodeExporter::start(dir.path()).await;
    let pki = Arc::new(TestPki::new());
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(format!(
            "[metrics]\ntextfile_directory = \"{}\"\n",
            dir.path().display()
        ))
        .start()
        .await;
    let client = https_client(&daemon.addr.to_string(), &pki, "client", b"http/1.1");
    let ours =
        || async { String::from_utf8_lossy(&get(&client, "/metrics", &[]).await.1).into_owned() };
    let value = |page: &str, prefix: &str| -> Option<String> {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    for page in [ours().await, exporter.page().await] {
        assert_eq!(
            value(
                &page,
                "apt_upgrades_pending{arch=\"all\",origin=\"Debian\"}"
            )
            .as_deref(),
            Some("3"),
            "{page}"
        );
        assert_eq!(
            value(&page, "node_textfile_scrape_error ").as_deref(),
            Some("1")
        );
        assert!(!page.contains("stamped_metric"));
        assert!(page.contains("node_textfile_mtime_seconds{file=\""));
        assert!(page.contains("apt.prom\"}"));
    }
    std::fs::remove_file(dir.path().join("broken.prom")).unwrap();
    std::fs::remove_file(dir.path().join("stamped.prom")).unwrap();
    // Past the 250 ms in which a rendered page is served again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for page in [ours().await, exporter.page().await] {
        assert_eq!(
            value(&page, "node_textfile_scrape_error ").as_deref(),
            Some("0")
        );
    }
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("textfile collector: skipping the file")
                && l.contains("broken.prom"))
    );
}
