//! The only module that touches libvirt: it implements the engine's `Hypervisor` and
//! maps libvirt's error codes to kimchid's errors, once. The connection is reopened
//! whenever libvirtd goes away.

mod domain;
mod domain_xml;
mod events;
mod host;
mod network;
mod probe;
mod stats;
mod storage;
mod xml;

use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kimchi_dbus::VolumeSpec;
use tokio::sync::mpsc;
use virt::connect::Connect;

use crate::engine::hypervisor::{
    Apply, DomainChange, DomainCounters, DomainRecord, Drive, GuestDefinition, HostCapabilities,
    HostEvent, HostInterface, Hypervisor, NetworkDefinition, NetworkRecord, Nic, NicDefinition,
    PoolDefinition, PoolRecord, Power, VolumeRecord,
};
use crate::error::{Error, Result};

const RECONNECT_DELAY: Duration = Duration::from_secs(2);

pub struct Libvirt {
    uri: String,
    conn: RwLock<Option<Arc<Connect>>>,
    probe_guest: probe::ProbeGuest,
}

impl Libvirt {
    /// Prepares libvirt's event loop; must run before the first connection is opened.
    pub fn new(uri: String) -> Result<Arc<Self>> {
        events::start_event_loop()?;
        Ok(Arc::new(Libvirt {
            uri,
            conn: RwLock::new(None),
            probe_guest: probe::ProbeGuest::default(),
        }))
    }

    /// Keeps a connection open for the life of the daemon, reporting every change on
    /// `events`. Returns only when the receiver is gone.
    pub async fn maintain_connection(self: Arc<Self>, events: mpsc::UnboundedSender<HostEvent>) {
        loop {
            let uri = self.uri.clone();
            let tx = events.clone();
            let opened = tokio::task::spawn_blocking(move || events::open(&uri, tx)).await;
            let (conn, mut closed) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    if events.send(HostEvent::Disconnected(e.to_string())).is_err() {
                        return;
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
                Err(join) => {
                    tracing::error!("libvirt connect task failed: {join}");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            *self.conn.write().expect("libvirt connection lock poisoned") = Some(Arc::new(conn));
            tracing::info!(uri = %self.uri, "connected to libvirt");
            if events.send(HostEvent::Connected).is_err() {
                return;
            }
            let reason = closed
                .recv()
                .await
                .unwrap_or_else(|| "event loop ended".to_owned());
            let old = self
                .conn
                .write()
                .expect("libvirt connection lock poisoned")
                .take();
            // Closing a dead connection blocks on the remote driver; keep it off the runtime.
            if let Some(old) = old {
                tokio::task::spawn_blocking(move || drop(old));
            }
            tracing::warn!(uri = %self.uri, %reason, "libvirt connection lost");
            if events.send(HostEvent::Disconnected(reason)).is_err() {
                return;
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// At kimchid's stop: no screenshot-probe guest outlives it (libvirt-guests would
    /// wait on it at shutdown).
    pub async fn stop_probing(self: Arc<Self>) {
        let stopped = tokio::task::spawn_blocking(move || {
            let conn = self.conn().ok();
            self.probe_guest.stop(conn.as_deref());
        })
        .await;
        if let Err(e) = stopped {
            tracing::error!("stopping the screenshot probe failed: {e}");
        }
    }

    /// The current connection, or the error that says libvirt is away.
    fn conn(&self) -> Result<Arc<Connect>> {
        self.conn
            .read()
            .expect("libvirt connection lock poisoned")
            .clone()
            .ok_or_else(|| Error::LibvirtUnavailable(self.uri.clone()))
    }
}

impl Hypervisor for Libvirt {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        domain::list_all(&*self.conn()?)
    }

    fn domain(&self, uuid: &str) -> Result<Option<DomainRecord>> {
        domain::by_uuid(&*self.conn()?, uuid)
    }

    fn define_guest(&self, def: &GuestDefinition) -> Result<DomainRecord> {
        domain::define(&*self.conn()?, def)
    }

    fn power(&self, uuid: &str, power: Power) -> Result<DomainRecord> {
        domain::power(&*self.conn()?, uuid, power)
    }

    fn change_domain(&self, uuid: &str, change: &DomainChange) -> Result<DomainRecord> {
        domain::change(&*self.conn()?, uuid, change)
    }

    fn set_metadata(&self, uuid: &str, icon: &str, created_volumes: &[String]) -> Result<()> {
        domain::set_metadata(&*self.conn()?, uuid, icon, created_volumes)
    }

    fn nic_addresses(&self, uuid: &str) -> Result<Vec<(String, Vec<String>)>> {
        domain::nic_addresses(&*self.conn()?, uuid)
    }

    fn attach_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord> {
        domain::attach(&*self.conn()?, uuid, &domain_xml::nic_xml(nic), apply)
    }

    fn update_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord> {
        domain::update(&*self.conn()?, uuid, &domain_xml::nic_xml(nic), apply)
    }

    fn detach_nic(&self, uuid: &str, nic: &Nic, apply: Apply) -> Result<DomainRecord> {
        domain::detach_nic(&*self.conn()?, uuid, nic, apply)
    }

    fn attach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        domain::attach(&*self.conn()?, uuid, &domain_xml::drive_xml(drive), apply)
    }

    fn change_media(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        domain::update(&*self.conn()?, uuid, &domain_xml::drive_xml(drive), apply)
    }

    fn detach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        domain::detach_drive(&*self.conn()?, uuid, drive, apply)
    }

    fn undefine(&self, uuid: &str) -> Result<()> {
        domain::undefine(&*self.conn()?, uuid)
    }

    fn screenshot(&self, uuid: &str) -> Result<(Vec<u8>, String)> {
        domain::screenshot(&*self.conn()?, uuid)
    }

    fn open_console(&self, uuid: &str) -> Result<OwnedFd> {
        domain::open_console(&*self.conn()?, uuid)
    }

    fn network_exists(&self, name: &str) -> Result<bool> {
        domain::network_exists(&*self.conn()?, name)
    }

    fn sample_stats(&self) -> Result<Vec<DomainCounters>> {
        stats::sample(&*self.conn()?)
    }

    fn probe_capabilities(&self) -> Result<HostCapabilities> {
        probe::probe(&*self.conn()?, &self.probe_guest)
    }

    fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        storage::list_pools(&*self.conn()?)
    }

    fn pool(&self, uuid: &str) -> Result<Option<PoolRecord>> {
        storage::pool_by_uuid(&*self.conn()?, uuid)
    }

    fn pool_by_name(&self, name: &str) -> Result<PoolRecord> {
        storage::pool_by_name(&*self.conn()?, name)
    }

    fn define_pool(&self, def: &PoolDefinition) -> Result<PoolRecord> {
        storage::define_pool(&*self.conn()?, def)
    }

    fn activate_pool(&self, name: &str) -> Result<PoolRecord> {
        storage::activate_pool(&*self.conn()?, name)
    }

    fn deactivate_pool(&self, name: &str) -> Result<PoolRecord> {
        storage::deactivate_pool(&*self.conn()?, name)
    }

    fn undefine_pool(&self, name: &str) -> Result<()> {
        storage::undefine_pool(&*self.conn()?, name)
    }

    fn pool_volumes(&self, pool: &str) -> Result<(PoolRecord, Vec<VolumeRecord>)> {
        storage::pool_volumes(&*self.conn()?, pool)
    }

    fn volume(&self, pool: &str, name: &str) -> Result<VolumeRecord> {
        storage::volume(&*self.conn()?, pool, name)
    }

    fn check_volume_name_free(&self, pool: &str, name: &str) -> Result<()> {
        storage::check_volume_name_free(&*self.conn()?, pool, name)
    }

    fn check_volume_inside(&self, pool: &str, name: &str) -> Result<()> {
        storage::check_volume_inside(&*self.conn()?, pool, name)
    }

    fn create_volume(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeRecord> {
        storage::create_volume(&*self.conn()?, pool, spec)
    }

    fn clone_volume(&self, pool: &str, source: &str, copy: &VolumeSpec) -> Result<VolumeRecord> {
        storage::clone_volume(&*self.conn()?, pool, source, copy)
    }

    fn resize_volume(&self, pool: &str, name: &str, capacity_mib: u64, shrink: bool) -> Result<()> {
        storage::resize_volume(&*self.conn()?, pool, name, capacity_mib, shrink)
    }

    fn wipe_volume(&self, pool: &str, name: &str, format: &str, capacity: u64) -> Result<()> {
        storage::wipe_volume(&*self.conn()?, pool, name, format, capacity)
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<()> {
        storage::delete_volume(&*self.conn()?, pool, name)
    }

    fn delete_volume_at(&self, path: &str) -> Result<()> {
        storage::delete_volume_at(&*self.conn()?, path)
    }

    fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        network::list_networks(&*self.conn()?)
    }

    fn network(&self, uuid: &str) -> Result<Option<NetworkRecord>> {
        network::by_uuid(&*self.conn()?, uuid)
    }

    fn define_network(&self, def: &NetworkDefinition) -> Result<NetworkRecord> {
        network::define(&*self.conn()?, def)
    }

    fn activate_network(&self, name: &str) -> Result<NetworkRecord> {
        network::activate(&*self.conn()?, name)
    }

    fn deactivate_network(&self, name: &str) -> Result<NetworkRecord> {
        network::deactivate(&*self.conn()?, name)
    }

    fn undefine_network(&self, name: &str) -> Result<()> {
        network::undefine(&*self.conn()?, name)
    }

    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<NetworkRecord> {
        network::set_autostart(&*self.conn()?, name, autostart)
    }

    fn host_interfaces(&self) -> Result<Vec<HostInterface>> {
        host::interfaces()
    }

    fn host_routes(&self) -> Result<Vec<String>> {
        host::routes()
    }
}

/// Reads every listed object; one undefined between listing and reading is left out
/// (the event for it follows).
fn read_listed<T, R>(listed: Vec<T>, read: impl Fn(&T) -> Result<R>) -> Result<Vec<R>> {
    let mut records = Vec::new();
    for item in &listed {
        match read(item) {
            Ok(r) => records.push(r),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(records)
}

/// libvirt's error codes, mapped to kimchid's errors here and nowhere else.
impl From<virt::error::Error> for Error {
    fn from(e: virt::error::Error) -> Self {
        use virt::enumutil::Enum;
        use virt::error::ErrorNumber;
        let message = e.message().to_owned();
        match e.code() {
            Enum::Known(
                ErrorNumber::NoDomain
                | ErrorNumber::NoStoragePool
                | ErrorNumber::NoStorageVolume
                | ErrorNumber::NoNetwork,
            ) => Error::NotFound(message),
            Enum::Known(ErrorNumber::StorageVolExist | ErrorNumber::DomExist) => {
                Error::AlreadyExists(message)
            }
            Enum::Known(ErrorNumber::OperationInvalid) => Error::InvalidState(message),
            code => Error::Libvirt {
                code: code.to_raw(),
                domain: e.domain().to_raw(),
                message,
            },
        }
    }
}
