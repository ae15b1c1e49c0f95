//! The soak: many logged-in clients at once, mostly reading, some creating and
//! deleting templates and storage volumes (volume creation runs as a kimchid task).
//! Then the daemons' memory, the tasks `GET /tasks` lists, and the memory again once
//! kimchid has let the finished tasks go.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kimchi_dbus::TaskState;
use serde_json::json;
use tokio::task::JoinSet;

use crate::http::{Client, Response};
use crate::sample::{fmt_ms, Samples};
use crate::{bus, guest_name, memory, results, say, step, Config, Result};

/// Every template and volume the soak makes is named so.
const SOAK_PREFIX: &str = "kimchi-bench-soak-";
/// The installation ISO the soak's templates name.
const ISO_DIR: &str = "/var/lib/kimchi-bench";
const POOL: &str = "default";
/// MiB: a volume as cheap as can be, it is deleted at once.
const VOLUME_MIB: u64 = 1;
const TASK_POLL: Duration = Duration::from_secs(5);
/// How long cleaning up waits for running tasks (volume creations) to end.
const CLEANUP_WAIT: Duration = Duration::from_secs(60);

/// One request kind of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    ListVms,
    GetVm,
    ListTemplates,
    ListPools,
    ListTasks,
    CreateTemplate,
    DeleteTemplate,
    CreateVolume,
    DeleteVolume,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::ListVms => "GET /vms",
            Op::GetVm => "GET /vms/:name",
            Op::ListTemplates => "GET /templates",
            Op::ListPools => "GET /storagepools",
            Op::ListTasks => "GET /tasks",
            Op::CreateTemplate => "POST /templates",
            Op::DeleteTemplate => "DELETE /templates/:name",
            Op::CreateVolume => "POST …/default/storagevolumes",
            Op::DeleteVolume => "DELETE …/storagevolumes/:name",
        }
    }
}

#[derive(Default)]
struct Outcomes {
    times: Vec<Duration>,
    failed: u64,
    /// The first failure's status and body.
    example: Option<String>,
}

#[derive(Default)]
struct Tally(BTreeMap<Op, Outcomes>);

impl Tally {
    /// Times the request; true if it succeeded.
    async fn time(
        &mut self,
        op: Op,
        request: impl Future<Output = Result<Response>>,
    ) -> Result<bool> {
        let start = Instant::now();
        let resp = request.await?;
        let outcomes = self.0.entry(op).or_default();
        outcomes.times.push(start.elapsed());
        let ok = resp.status.is_success();
        if !ok {
            outcomes.failed += 1;
            outcomes.example.get_or_insert_with(|| {
                format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body))
            });
        }
        Ok(ok)
    }

    fn merge(&mut self, other: Tally) {
        for (op, theirs) in other.0 {
            let ours = self.0.entry(op).or_default();
            ours.times.extend(theirs.times);
            ours.failed += theirs.failed;
            if ours.example.is_none() {
                ours.example = theirs.example;
            }
        }
    }
}

pub async fn run(cfg: &Config, duration: Duration) -> Result<()> {
    step(&format!(
        "soak: {} clients with sessions for {} s (reads; template and volume creates/deletes)",
        cfg.soak_clients,
        duration.as_secs()
    ));
    let iso = Path::new(ISO_DIR).join("soak.iso");
    tokio::task::block_in_place(|| {
        kimchi_tests::write_iso(kimchi_tests::UBUNTU_VOLUME_ID, true, &iso)
    });
    let soaked = tokio::select! {
        tally = soak(cfg, duration, iso) => tally,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    let tally = match soaked {
        Ok(tally) => tally,
        Err(e) => {
            cleanup().await?;
            return Err(e);
        }
    };
    print(cfg, &tally)?;
    memory::record(cfg, "after-soak")?;
    let mut web = Client::session(&cfg.target, &cfg.user, &cfg.password).await?;
    let (all, running) = tasks(&mut web).await?;
    say(&format!(
        "GET /tasks lists {all} tasks, {running} of them running"
    ));
    results::record(&cfg.results, "soak.tasks_listed", all as f64)?;
    cleanup().await?;

    step(&format!(
        "soak: waiting (up to {} s) for the finished tasks to leave GET /tasks",
        cfg.task_wait.as_secs()
    ));
    let start = Instant::now();
    let mut last_said = start;
    let left = loop {
        let (all, running) = tasks(&mut web).await?;
        let finished = all - running;
        if finished == 0 || start.elapsed() >= cfg.task_wait {
            say(&format!(
                "{finished} finished tasks listed after {:.0} s",
                start.elapsed().as_secs_f64()
            ));
            break finished;
        }
        if last_said.elapsed() >= Duration::from_secs(60) {
            say(&format!(
                "{:.0} s: {finished} finished tasks still listed",
                start.elapsed().as_secs_f64()
            ));
            last_said = Instant::now();
        }
        tokio::time::sleep(TASK_POLL).await;
    };
    results::record(&cfg.results, "soak.finished_tasks_left", left as f64)?;
    results::record(
        &cfg.results,
        "soak.task_wait_s",
        start.elapsed().as_secs_f64(),
    )?;
    web.logout().await;
    memory::record(cfg, "after-tasks")
}

/// Logs every client in, then lets them loose together for `duration`.
async fn soak(cfg: &Config, duration: Duration, iso: PathBuf) -> Result<Tally> {
    let mut logins = JoinSet::new();
    for id in 0..cfg.soak_clients {
        let (target, user, password) = (cfg.target.clone(), cfg.user.clone(), cfg.password.clone());
        logins.spawn(async move {
            Ok::<_, crate::Error>((id, Client::session(&target, &user, &password).await?))
        });
    }
    let mut clients = Vec::new();
    while let Some(login) = logins.join_next().await {
        clients.push(login??);
    }
    let deadline = Instant::now() + duration;
    let iso = Arc::new(iso);
    let mut running = JoinSet::new();
    for (id, web) in clients {
        running.spawn(client(web, id, deadline, iso.clone()));
    }
    let mut tally = Tally::default();
    while let Some(done) = running.join_next().await {
        tally.merge(done??);
    }
    Ok(tally)
}

/// One client's loop: eight in ten requests read, one creates and deletes a
/// template, one a volume.
async fn client(mut web: Client, id: usize, deadline: Instant, iso: Arc<PathBuf>) -> Result<Tally> {
    let vm = format!("/vms/{}", guest_name(1));
    let reads = [
        (Op::ListVms, "/vms"),
        (Op::GetVm, vm.as_str()),
        (Op::ListTemplates, "/templates"),
        (Op::ListPools, "/storagepools"),
        (Op::ListTasks, "/tasks"),
    ];
    // xorshift64, seeded per client: a reproducible mix without a dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut tally = Tally::default();
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let name = format!("{SOAK_PREFIX}{id}-{n}");
        match next() % 10 {
            8 => {
                let body = json!({"name": name, "cdrom": *iso});
                if tally
                    .time(Op::CreateTemplate, web.post("/templates", &body))
                    .await?
                {
                    let path = format!("/templates/{name}");
                    tally.time(Op::DeleteTemplate, web.delete(&path)).await?;
                }
            }
            9 => {
                let volumes = format!("/storagepools/{POOL}/storagevolumes");
                let volume = format!("{name}.img");
                let body = json!({"name": volume, "capacity": VOLUME_MIB, "format": "raw"});
                if tally
                    .time(Op::CreateVolume, web.post(&volumes, &body))
                    .await?
                {
                    let path = format!("{volumes}/{volume}");
                    tally.time(Op::DeleteVolume, web.delete(&path)).await?;
                }
            }
            _ => {
                let (op, path) = reads[(next() % reads.len() as u64) as usize];
                tally.time(op, web.get(path)).await?;
            }
        }
    }
    web.logout().await;
    Ok(tally)
}

fn print(cfg: &Config, tally: &Tally) -> Result<()> {
    say(&format!(
        "{:<32} {:>7} {:>7} {:>9} {:>9}",
        "request", "calls", "failed", "p50 ms", "p99 ms"
    ));
    let (mut calls, mut failed) = (0, 0);
    for (op, outcomes) in &tally.0 {
        let times = Samples::new(outcomes.times.clone());
        say(&format!(
            "{:<32} {:>7} {:>7} {:>9} {:>9}",
            op.label(),
            times.len(),
            outcomes.failed,
            fmt_ms(times.median_ms()),
            fmt_ms(times.percentile_ms(99.0))
        ));
        calls += times.len();
        failed += outcomes.failed;
    }
    for (op, outcomes) in &tally.0 {
        if let Some(example) = &outcomes.example {
            say(&format!("{} failed, e.g.: {example}", op.label()));
        }
    }
    results::record(&cfg.results, "soak.calls", calls as f64)?;
    results::record(&cfg.results, "soak.failed", failed as f64)
}

/// `GET /tasks`: how many tasks it lists, and how many of them are running.
async fn tasks(web: &mut Client) -> Result<(usize, usize)> {
    let list = web.get_ok("/tasks").await?.json()?;
    let list = list.as_array().ok_or("GET /tasks is not a list")?;
    let running = list.iter().filter(|t| t["status"] == "running").count();
    Ok((list.len(), running))
}

/// Deletes the soak's templates and volumes (as root, over D-Bus: this also runs
/// when a soak was interrupted and its sessions are gone) and its ISO.
pub async fn cleanup() -> Result<()> {
    let conn = zbus::Connection::system().await?;
    let manager = bus::manager(&conn).await?;
    // Volume creations of an interrupted soak still run and would leave their volume.
    let deadline = Instant::now() + CLEANUP_WAIT;
    while Instant::now() < deadline
        && manager
            .list_tasks(bus::Options::new())
            .await?
            .iter()
            .any(|task| task.state == TaskState::Running)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut templates = 0;
    for template in manager.list_templates(bus::Options::new()).await? {
        if template.spec.name.starts_with(SOAK_PREFIX) {
            manager
                .delete_template(&template.spec.name, bus::Options::new())
                .await?;
            templates += 1;
        }
    }
    let mut volumes = 0;
    for volume in manager
        .list_storage_volumes(POOL, bus::Options::new())
        .await?
    {
        if volume.name.starts_with(SOAK_PREFIX) {
            manager
                .delete_storage_volume(POOL, &volume.name, bus::Options::new())
                .await?;
            volumes += 1;
        }
    }
    match std::fs::remove_dir_all(ISO_DIR) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    say(&format!(
        "removed what the soak left: {templates} templates, {volumes} volumes, {ISO_DIR}"
    ));
    Ok(())
}
