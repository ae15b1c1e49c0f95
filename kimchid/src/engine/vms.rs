//! Virtual machines as Kimchi manages them: creation from a template in a task
//! (disks first, removed again when the define fails), power actions that say why
//! they cannot run, graceful shutdown as a task, edits, deletion together with the
//! disks kimchid made, cached screenshots and console sockets. NICs and drives are
//! in `ifaces.rs` and `storages.rs`.

mod ifaces;
mod storages;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kimchi_dbus::{
    vm_path, TaskInfo, VmInfo, VmPatch, VmState, VolumeSpec, ISO_POOL, MAX_SHUTDOWN_TIMEOUT_SECS,
};
use zbus::OwnedObjectPath;

use super::claims::{Claim, Claims};
use super::hypervisor::{
    Apply, Backend, Cdrom, DomainChange, DomainRecord, GuestDefinition, GuestDisk, Hypervisor,
    Power,
};
use super::in_flight::InFlight;
use super::isos::Isos;
use super::journal::Operation;
use super::model::{Model, DEFAULT_POOL};
use super::storage_pools::StoragePools;
use super::tasks::{Tasks, Wait};
use super::templates::{Template, Templates};
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::iso_url::IsoUrl;
use crate::names::{check_name_within, MAX_VM_NAME_BYTES};
use crate::user_file::{self, UserFileError};

/// The libvirt network new guests are plugged into, when it exists.
const NETWORK: &str = "default";
/// A screenshot this recent is served again instead of taking a new one.
const SCREENSHOT_FRESH: Duration = Duration::from_secs(5);
/// Generated names are `<template>-vm-<n>` with n up to this.
const MAX_GENERATED: u32 = 9999;
/// How long a shutdown waits for the guest when the caller names no time.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a shutdown task looks whether the guest is off yet (the model follows
/// libvirt's events).
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Virtual CPUs a guest may be given: QEMU's i440fx limit.
const MAX_CPUS: u32 = 255;
/// Less memory than this boots no current operating system.
const MIN_MEMORY_MIB: u64 = 64;
const MAX_TITLE_CHARS: usize = 256;
const MAX_DESCRIPTION_CHARS: usize = 4096;

type Screenshot = Option<(Instant, Arc<Vec<u8>>)>;
/// A change's hold on its VM (see `Vms::in_use`).
type InUse = tokio::sync::OwnedRwLockReadGuard<()>;

/// A disk to make for a new guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisk {
    pub index: u32,
    /// The volume's name in the pool.
    pub volume: String,
    pub size_mib: u64,
    /// Volume of the pool to copy, or empty for an empty disk.
    pub source: String,
}

pub struct Vms {
    backend: Arc<Backend>,
    model: Arc<Model>,
    tasks: Arc<Tasks>,
    templates: Arc<Templates>,
    isos: Arc<Isos>,
    pools: Arc<StoragePools>,
    in_flight: Arc<InFlight>,
    /// Names of VMs being created, so that two requests cannot take the same one.
    creating: Claims<String>,
    /// UUIDs of VMs being deleted: changes to them are refused meanwhile.
    deleting: Claims<String>,
    /// Per VM UUID: a change holds it shared while it runs, a deletion exclusively,
    /// so a deletion waits for the changes under way (a start landing between the
    /// deletion's look at the guest and its undefine would leave it running).
    in_use: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Latest screenshot per VM UUID; the async lock makes concurrent requests for one
    /// VM share a capture.
    screenshots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Screenshot>>>>,
}

impl Vms {
    pub fn new(
        backend: Arc<Backend>,
        model: Arc<Model>,
        tasks: Arc<Tasks>,
        templates: Arc<Templates>,
        isos: Arc<Isos>,
        pools: Arc<StoragePools>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Vms {
            backend,
            model,
            tasks,
            templates,
            isos,
            pools,
            in_flight,
            creating: Claims::new(),
            deleting: Claims::new(),
            in_use: Mutex::default(),
            screenshots: Mutex::new(HashMap::new()),
        }
    }

    /// VMs sorted by name, case-insensitively, as Kimchi listed them.
    pub fn list(&self) -> Vec<VmInfo> {
        self.model.map_vms(|r| self.info(r))
    }

    pub fn get(&self, name: &str) -> Result<VmInfo> {
        Ok(self.info(&self.model.vm_by_name(name)?))
    }

    pub fn by_uuid(&self, uuid: &str) -> Option<VmInfo> {
        self.model.vm_by_uuid(uuid).map(|r| self.info(&r))
    }

    /// The VM with this UUID, or else with this name.
    pub fn lookup(&self, name_or_uuid: &str) -> Result<VmInfo> {
        match self.by_uuid(name_or_uuid) {
            Some(vm) => Ok(vm),
            None => self.get(name_or_uuid),
        }
    }

    fn info(&self, r: &DomainRecord) -> VmInfo {
        VmInfo {
            path: OwnedObjectPath::try_from(vm_path(&r.uuid)).expect("UUIDs make valid paths"),
            name: r.name.clone(),
            uuid: r.uuid.clone(),
            state: r.state,
            memory_mib: r.memory_mib,
            graphics_type: r.graphics_type.clone(),
            icon: r.icon.clone(),
            stats: self.model.vm_stats(&r.uuid),
            cpus: r.cpus,
            autostart: r.autostart,
            title: r.title.clone(),
            description: r.description.clone(),
            pending_changes: r.pending_changes,
        }
    }

    /// Checks the request, then creates the VM in a task whose target names the VM
    /// (`name`, or one chosen here when it is empty).
    pub async fn create(
        &self,
        template: &str,
        name: &str,
        pool: &str,
        wait: Wait,
    ) -> Result<TaskInfo> {
        let template = self.templates.get(template)?;
        let pool = if pool.is_empty() { DEFAULT_POOL } else { pool };
        if pool == ISO_POOL {
            return Err(Error::InvalidArgument(format!(
                "{ISO_POOL} is a read-only view and cannot hold VM disks"
            )));
        }
        let pool_record = self.model.pool_by_name(pool)?;
        if !pool_record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{pool}' is not active; activate it first"
            )));
        }
        let reservation = self.reserve(name, &template.spec.name)?;
        let name = reservation.key().clone();
        let plan: Vec<NewDisk> = template
            .spec
            .disks
            .iter()
            .map(|d| NewDisk {
                index: d.index,
                volume: format!("{name}-{}.img", d.index),
                size_mib: d.size_gb * 1024,
                source: d.volume.clone(),
            })
            .collect();
        let disk_claims = plan
            .iter()
            .map(|d| self.pools.claim_volume(pool, &d.volume))
            .collect::<Result<Vec<_>>>()?;
        let has_network = self.check_volumes(pool, &plan).await?;
        check_template_cdrom(&template.spec.cdrom).await?;
        let mut def = self.definition(&template, &name, has_network)?;
        let format = if pool_record.pool_type == "logical" {
            "raw"
        } else {
            "qcow2"
        };

        let operation = Operation::VmCreate {
            name,
            uuid: def.uuid.clone(),
            pool: pool.to_owned(),
            volumes: plan.iter().map(|d| d.volume.clone()).collect(),
        };
        let (backend, model) = (self.backend.clone(), self.model.clone());
        let pool = pool.to_owned();
        let claims = (reservation, disk_claims);
        let id = self
            .in_flight
            .start(operation, claims, async move {
                let record = backend
                    .run(move |hv| create_guest(hv, &pool, format, &plan, &mut def))
                    .await?;
                let message = format!("created VM '{}'", record.name);
                model.upsert(record);
                Ok(message)
            })
            .await?;
        self.tasks.reply(id, wait).await
    }

    /// Holds the requested name, or the first free `<template>-vm-<n>`, while the VM
    /// is created (or renamed).
    pub(super) fn reserve(&self, requested: &str, template: &str) -> Result<Claim<String>> {
        self.creating.claim_with(|creating| {
            let taken = |n: &str| creating.contains(n) || self.model.vm_by_name(n).is_ok();
            let name = if requested.is_empty() {
                (1..=MAX_GENERATED)
                    .map(|i| format!("{template}-vm-{i}"))
                    .find(|n| !taken(n))
                    .ok_or_else(|| {
                        Error::AlreadyExists(format!(
                            "no free VM name '{template}-vm-<n>' is left; give a name"
                        ))
                    })?
            } else {
                if taken(requested) {
                    return Err(Error::AlreadyExists(format!(
                        "VM '{requested}' already exists"
                    )));
                }
                requested.to_owned()
            };
            check_vm_name(&name)?;
            Ok(name)
        })
    }

    /// Refuses disk names already taken and copies of volumes that do not exist, before
    /// anything is created; tells whether the guest network exists.
    async fn check_volumes(&self, pool: &str, plan: &[NewDisk]) -> Result<bool> {
        let (pool, plan) = (pool.to_owned(), plan.to_vec());
        self.backend
            .run(move |hv| {
                for disk in &plan {
                    hv.check_volume_name_free(&pool, &disk.volume)?;
                    if !disk.source.is_empty() {
                        hv.volume(&pool, &disk.source).map_err(|e| {
                            e.refers_to_missing(|| {
                                format!(
                                    "the template copies volume '{}', which pool '{pool}' \
                                     does not have",
                                    disk.source
                                )
                            })
                        })?;
                    }
                }
                hv.network_exists(NETWORK)
            })
            .await
    }

    /// The guest's definition without its disks, which the task adds as it makes them.
    fn definition(
        &self,
        template: &Template,
        name: &str,
        has_network: bool,
    ) -> Result<GuestDefinition> {
        let spec = &template.spec;
        let cdrom = if spec.cdrom.is_empty() {
            None
        } else if spec.cdrom.starts_with('/') {
            Some(Cdrom::File(spec.cdrom.clone()))
        } else {
            let url = IsoUrl::parse(&spec.cdrom)?;
            Some(Cdrom::Remote {
                protocol: url.scheme,
                host: url.host,
                port: url.port,
                path: url.path,
            })
        };
        Ok(GuestDefinition {
            name: name.to_owned(),
            uuid: new_uuid(),
            kvm: self.model.host().kvm,
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            disk_bus: template.disk_bus(),
            disks: Vec::new(),
            cdrom,
            network: has_network.then(|| NETWORK.to_owned()),
            nic_model: template.nic_model.clone(),
            icon: spec.icon.clone(),
            created_volumes: Vec::new(),
        })
    }

    /// Runs a power action that returns at once (all but shutdown), if the VM's state
    /// allows it; libvirt refusing it because the state changed meanwhile gives the
    /// same sentence.
    pub async fn power(&self, name: &str, power: Power) -> Result<VmInfo> {
        let (vm, _in_use) = self.changeable(name)?;
        check_power(&vm, power)?;
        let uuid = vm.uuid.clone();
        let record = match self.backend.run(move |hv| hv.power(&uuid, power)).await {
            Ok(record) => record,
            Err(refusal @ Error::InvalidState(_)) => {
                return Err(self.power_refused(vm, power, refusal).await)
            }
            Err(e) => return Err(e),
        };
        self.model.upsert(record.clone());
        Ok(self.info(&record))
    }

    /// Asks the guest to shut down, in a task that ends when it is off. After
    /// `timeout_secs` (0: the default) a guest still running is powered off if `force`,
    /// else left running and the task fails.
    pub async fn shutdown(
        &self,
        name: &str,
        timeout_secs: u32,
        force: bool,
        wait: Wait,
    ) -> Result<TaskInfo> {
        if timeout_secs > MAX_SHUTDOWN_TIMEOUT_SECS {
            return Err(Error::InvalidArgument(format!(
                "a shutdown waits at most {MAX_SHUTDOWN_TIMEOUT_SECS} s, not {timeout_secs}"
            )));
        }
        let timeout = match timeout_secs {
            0 => SHUTDOWN_TIMEOUT,
            secs => Duration::from_secs(secs.into()),
        };
        let (vm, in_use) = self.changeable(name)?;
        check_power(&vm, Power::Shutdown)?;
        let uuid = vm.uuid.clone();
        match self
            .backend
            .run(move |hv| hv.power(&uuid, Power::Shutdown))
            .await
        {
            Ok(record) => self.model.upsert(record),
            Err(refusal @ Error::InvalidState(_)) => {
                return Err(self.power_refused(vm, Power::Shutdown, refusal).await)
            }
            Err(e) => return Err(e),
        }
        // The task only watches the guest: a deletion need not wait for it.
        drop(in_use);
        let (backend, model) = (self.backend.clone(), self.model.clone());
        let id = self
            .tasks
            .start("vm.shutdown", format!("/vms/{name}"), async move {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    match model.vm_by_uuid(&vm.uuid) {
                        Some(now) if now.state != VmState::Shutoff => {}
                        _ => return Ok(format!("VM '{}' shut down", vm.name)),
                    }
                    tokio::time::sleep(SHUTDOWN_POLL).await;
                }
                let secs = timeout.as_secs();
                if !force {
                    return Err(Error::InvalidState(format!(
                        "VM '{}' did not shut down within {secs} s; it is still running",
                        vm.name
                    )));
                }
                let uuid = vm.uuid.clone();
                match backend.run(move |hv| hv.power(&uuid, Power::Off)).await {
                    Ok(record) => model.upsert(record),
                    // Off by itself in the last moment.
                    Err(Error::InvalidState(_)) => {}
                    Err(e) => return Err(e),
                }
                Ok(format!(
                    "VM '{}' did not shut down within {secs} s and was powered off",
                    vm.name
                ))
            });
        self.tasks.reply(id, wait).await
    }

    /// Changes what `patch` names, all checked before anything changes.
    pub async fn update(&self, name: &str, patch: VmPatch) -> Result<VmInfo> {
        let (vm, _in_use) = self.changeable(name)?;
        let change = self.check_change(&vm, patch)?;
        if change == DomainChange::default() {
            return Ok(self.info(&vm));
        }
        // A new name is held like a creation's, so neither can take it meanwhile.
        let _claim = match &change.name {
            Some(new) => Some(self.reserve(new, &vm.name)?),
            None => None,
        };
        let uuid = vm.uuid.clone();
        let record = self
            .backend
            .run(move |hv| hv.change_domain(&uuid, &change))
            .await?;
        self.model.upsert(record.clone());
        Ok(self.info(&record))
    }

    fn check_change(&self, vm: &DomainRecord, patch: VmPatch) -> Result<DomainChange> {
        let bad = |why: String| Err(Error::InvalidArgument(why));
        let name = patch.name.filter(|n| *n != vm.name);
        if let Some(new) = &name {
            check_vm_name(new)?;
            if vm.state != VmState::Shutoff {
                return Err(Error::InvalidState(format!(
                    "VM '{}' is {}; only a shut-off VM can be renamed",
                    vm.name, vm.state
                )));
            }
        }
        if let Some(cpus) = patch.cpus {
            if !(1..=MAX_CPUS).contains(&cpus) {
                return bad(format!("cpus must be 1 to {MAX_CPUS}, not {cpus}"));
            }
        }
        if let Some(memory) = patch.memory_mib {
            let host = self.model.host().memory_mib;
            if memory < MIN_MEMORY_MIB {
                return bad(format!(
                    "memory must be at least {MIN_MEMORY_MIB} MiB, not {memory}"
                ));
            }
            if host > 0 && memory > host {
                return bad(format!(
                    "memory of {memory} MiB is more than the host's {host} MiB"
                ));
            }
        }
        if let Some(title) = &patch.title {
            check_text("title", title, MAX_TITLE_CHARS, &[])?;
        }
        if let Some(description) = &patch.description {
            check_text(
                "description",
                description,
                MAX_DESCRIPTION_CHARS,
                &['\n', '\r', '\t'],
            )?;
        }
        Ok(DomainChange {
            name,
            cpus: patch.cpus,
            memory_mib: patch.memory_mib,
            autostart: patch.autostart,
            title: patch.title,
            description: patch.description,
        })
    }

    /// libvirt refused `power` for the guest's state: if it changed since the model
    /// looked, the engine's sentence names the state it is in now; if the state still
    /// allows the action, libvirt's reason is the real one (a network down, …).
    async fn power_refused(&self, vm: DomainRecord, power: Power, refusal: Error) -> Error {
        let uuid = vm.uuid.clone();
        match self.backend.run(move |hv| hv.domain(&uuid)).await {
            Ok(Some(now)) => {
                self.model.upsert(now.clone());
                check_power(&now, power).err().unwrap_or(refusal)
            }
            Ok(None) => {
                self.model.remove(&vm.uuid);
                Error::NotFound(format!("no VM named '{}'", vm.name))
            }
            Err(e) => e,
        }
    }

    /// Powers the VM off if needed, undefines it and deletes the volumes kimchid
    /// created for it (disks attached by other means stay).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let vm = self.model.vm_by_name(name)?;
        let _deleting = self.deleting.claim_with(|deleting| {
            if deleting.contains(&vm.uuid) {
                Err(being_deleted(&vm))
            } else {
                Ok(vm.uuid.clone())
            }
        })?;
        let _exclusive = self.use_lock(&vm.uuid).write_owned().await;
        let uuid = vm.uuid.clone();
        let volumes = vm.created_volumes.clone();
        let leftovers = self
            .backend
            .run(move |hv| {
                hv.undefine(&uuid)?;
                Ok(volumes
                    .iter()
                    .filter_map(|path| {
                        hv.delete_volume_at(path)
                            .err()
                            .map(|e| format!("{path}: {e}"))
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        self.model.remove(&vm.uuid);
        self.screenshots
            .lock()
            .expect("screenshot lock poisoned")
            .remove(&vm.uuid);
        self.in_use
            .lock()
            .expect("in-use lock poisoned")
            .remove(&vm.uuid);
        if !leftovers.is_empty() {
            return Err(Error::Internal(format!(
                "VM '{name}' was deleted, but not all of its disks: {}",
                leftovers.join("; ")
            )));
        }
        Ok(())
    }

    /// A PNG of the running VM's screen, taken at most `SCREENSHOT_FRESH` ago.
    pub async fn screenshot(&self, name: &str) -> Result<Arc<Vec<u8>>> {
        let vm = self.running(name)?;
        let slot = self
            .screenshots
            .lock()
            .expect("screenshot lock poisoned")
            .entry(vm.uuid.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((taken, png)) = slot.as_ref() {
            if taken.elapsed() < SCREENSHOT_FRESH {
                return Ok(png.clone());
            }
        }
        let uuid = vm.uuid.clone();
        let (image, mime) = self.backend.run(move |hv| hv.screenshot(&uuid)).await?;
        if mime != "image/png" {
            return Err(Error::NotSupported(format!(
                "this QEMU sends screenshots as {mime}, not PNG"
            )));
        }
        let png = Arc::new(image);
        *slot = Some((Instant::now(), png.clone()));
        Ok(png)
    }

    /// A socket to the running VM's VNC server.
    pub async fn open_console(&self, uuid: &str) -> Result<OwnedFd> {
        let vm = self
            .model
            .vm_by_uuid(uuid)
            .ok_or_else(|| Error::NotFound(format!("no VM with UUID {uuid}")))?;
        check_console(&vm)?;
        let uuid = vm.uuid.clone();
        match self.backend.run(move |hv| hv.open_console(&uuid)).await {
            Ok(fd) => Ok(fd),
            Err(refusal) => Err(self.console_refused(vm, refusal).await),
        }
    }

    /// libvirt could not open the console: if the guest stopped meanwhile (QEMU's
    /// monitor already gone), that is the reason; otherwise libvirt's is.
    async fn console_refused(&self, vm: DomainRecord, refusal: Error) -> Error {
        let uuid = vm.uuid.clone();
        match self.backend.run(move |hv| hv.domain(&uuid)).await {
            Ok(Some(now)) => {
                self.model.upsert(now.clone());
                check_console(&now).err().unwrap_or(refusal)
            }
            Ok(None) => {
                self.model.remove(&vm.uuid);
                Error::NotFound(format!("no VM named '{}'", vm.name))
            }
            Err(_) => refusal,
        }
    }

    /// The VM `name`, unless it is being deleted, and the hold on it that keeps its
    /// deletion waiting until the change is done.
    fn changeable(&self, name: &str) -> Result<(DomainRecord, InUse)> {
        let vm = self.model.vm_by_name(name)?;
        if self.deleting.holds(&vm.uuid) {
            return Err(being_deleted(&vm));
        }
        let in_use = self.use_lock(&vm.uuid).try_read_owned();
        let in_use = in_use.map_err(|_| being_deleted(&vm))?;
        Ok((vm, in_use))
    }

    fn use_lock(&self, uuid: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.in_use
            .lock()
            .expect("in-use lock poisoned")
            .entry(uuid.to_owned())
            .or_default()
            .clone()
    }

    /// The VM, if it runs: a screen exists only then.
    fn running(&self, name: &str) -> Result<DomainRecord> {
        let vm = self.model.vm_by_name(name)?;
        if !vm.state.has_screen() {
            return Err(Error::NotFound(format!(
                "VM '{name}' is not running, so it has no screen"
            )));
        }
        Ok(vm)
    }
}

/// A template's local cdrom is still there to be read (looked at as every user-named
/// file is: it may have been replaced by a FIFO or sit on a mount that hung since).
async fn check_template_cdrom(cdrom: &str) -> Result<()> {
    if !cdrom.starts_with('/') {
        return Ok(());
    }
    let why = match user_file::read(Path::new(cdrom), drop).await {
        Ok(()) => return Ok(()),
        Err(UserFileError::NotFound) => "no longer exists".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(Error::InvalidArgument(format!(
        "the template's cdrom '{}' {why}",
        excerpt(cdrom)
    )))
}

fn being_deleted(vm: &DomainRecord) -> Error {
    Error::Busy(format!("VM '{}' is being deleted", excerpt(&vm.name)))
}

/// Whether the VM's state allows `power`: a guest starts from shut off or crashed,
/// anything but a shut-off guest can be pulled the plug on, a running one asked to
/// shut down, reboot or pause, a paused one resumed, and either reset.
/// A console opens on a running guest with a VNC display.
fn check_console(vm: &DomainRecord) -> Result<()> {
    if !vm.state.has_screen() {
        return Err(Error::InvalidState(format!(
            "VM '{}' is not running; start it first",
            vm.name
        )));
    }
    if vm.graphics_type != "vnc" {
        return Err(Error::InvalidState(format!(
            "VM '{}' has no VNC display to connect to",
            vm.name
        )));
    }
    Ok(())
}

fn check_power(vm: &DomainRecord, power: Power) -> Result<()> {
    use VmState::*;
    let running = matches!(vm.state, Running | Blocked);
    let may = match power {
        Power::On => matches!(vm.state, Shutoff | Crashed),
        Power::Off => vm.state != Shutoff,
        Power::Shutdown | Power::Reboot | Power::Suspend => running,
        Power::Reset => running || vm.state == Paused,
        Power::Resume => vm.state == Paused,
    };
    if may {
        return Ok(());
    }
    let name = &vm.name;
    Err(Error::InvalidState(match (power, vm.state) {
        (Power::On, state) => format!("VM '{name}' is already {state}"),
        (Power::Suspend, Paused) => format!("VM '{name}' is already paused"),
        (Power::Shutdown | Power::Reboot, Paused) => {
            format!("VM '{name}' is paused; resume it first")
        }
        (Power::Resume, _) => format!("VM '{name}' is not paused"),
        _ => format!("VM '{name}' is not running"),
    }))
}

/// Whether the guest runs, so device changes reach it live too.
fn live(vm: &DomainRecord) -> Apply {
    if matches!(vm.state, VmState::Shutoff | VmState::Crashed) {
        Apply::Stored
    } else {
        Apply::LiveAndStored
    }
}

/// A title or description: at most `max` characters, no control characters but
/// those `allowed`.
fn check_text(field: &str, text: &str, max: usize, allowed: &[char]) -> Result<()> {
    if text.chars().count() > max {
        return Err(Error::InvalidArgument(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !allowed.contains(c))
    {
        return Err(Error::InvalidArgument(format!(
            "{field} contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Makes the disks in `pool`, then defines the guest; removes the disks again if any
/// step fails, so a failed creation leaves nothing behind.
pub fn create_guest(
    hv: &dyn Hypervisor,
    pool: &str,
    format: &str,
    disks: &[NewDisk],
    def: &mut GuestDefinition,
) -> Result<DomainRecord> {
    let mut created = Vec::new();
    let mut attempt = || {
        for disk in disks {
            let spec = |format: &str| VolumeSpec {
                name: disk.volume.clone(),
                capacity_mib: disk.size_mib,
                allocation_mib: 0,
                format: format.to_owned(),
            };
            // A copy is made qcow2 whatever the pool, as Kimchi made them.
            let vol = if disk.source.is_empty() {
                hv.create_volume(pool, &spec(format))?
            } else {
                hv.clone_volume(pool, &disk.source, &spec("qcow2"))?
            };
            created.push(vol.path.clone());
            def.disks.push(GuestDisk {
                index: disk.index,
                path: vol.path,
                format: vol.format,
            });
        }
        def.created_volumes = created.clone();
        hv.define_guest(def)
    };
    let result = attempt();
    if result.is_err() {
        for path in &created {
            if let Err(e) = hv.delete_volume_at(path) {
                tracing::error!(path, "cannot remove the disk of a failed VM creation: {e}");
            }
        }
    }
    result
}

/// A random (version 4) UUID in libvirt's text form.
fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A VM name: a valid file-name component (disks are named after it) with nothing
/// that reads as markup.
pub fn check_vm_name(name: &str) -> Result<()> {
    check_name_within("VM", name, MAX_VM_NAME_BYTES)?;
    if let Some(c) = name.chars().find(|c| "<>&'\"\\%".contains(*c)) {
        return Err(Error::InvalidArgument(format!(
            "invalid VM name '{}': it contains '{c}'",
            excerpt(name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    #[test]
    fn new_uuids_are_random_version_4() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    #[test]
    fn vm_names_refuse_markup_and_paths() {
        check_vm_name("web-01.example").unwrap();
        check_vm_name("ünïcode vm").unwrap();
        for (bad, why) in [
            ("", "it is empty"),
            ("a/b", "it contains '/'"),
            ("<x>", "it contains '<'"),
            ("a&b", "it contains '&'"),
            ("q'uote", "it contains '''"),
            ("..", "it starts with '.'"),
            (".hidden", "it starts with '.'"),
            ("a\\b", "it contains '\\'"),
            ("50%", "it contains '%'"),
        ] {
            let message = format!("invalid VM name '{bad}': {why}");
            assert_error!(check_vm_name(bad), InvalidArgument, message, "{bad:?}");
        }
    }
}
