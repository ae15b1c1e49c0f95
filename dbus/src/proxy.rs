//! Client side of the contract: the gateway and the tests call kimchid through these.

use std::collections::HashMap;

use zbus::{proxy, OwnedVariant};

use crate::{
    Capabilities, Error, InterfaceInfo, NetworkInfo, NetworkSpec, PoolInfo, PoolSpec,
    ScreenshotSupport, SessionInfo, TaskInfo, TemplateInfo, TemplateSpec, VmIface, VmIfaceSpec,
    VmInfo, VmStorage, VmStorageSpec, VolumeInfo, VolumeSpec,
};

type Options = HashMap<String, OwnedVariant>;

#[proxy(
    interface = "org.kimchi.Kimchi1.Manager",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Manager"
)]
pub trait Manager {
    /// All defined VMs (action `org.kimchi.read`).
    #[zbus(name = "ListVMs")]
    fn list_vms(&self, options: Options) -> Result<Vec<VmInfo>, Error>;

    /// One VM by name (action `org.kimchi.read`).
    #[zbus(name = "GetVM")]
    fn get_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// The object path of the VM with this name or UUID (action `org.kimchi.read`).
    #[zbus(name = "LookupVM")]
    fn lookup_vm(&self, name: &str, options: Options) -> Result<zbus::OwnedObjectPath, Error>;

    /// Starts a task that creates the VM's disks in `storage_pool` (empty: `default`)
    /// and defines it from the template; an empty `name` is chosen as
    /// `<template>-vm-<n>` (action `org.kimchi.vm.manage`). The task's target is the
    /// VM's API path. Like every method that starts a task, it returns the task as it
    /// is when the call returns: at once, or once it ended with `kimchi.wait`.
    #[zbus(name = "CreateVM")]
    fn create_vm(
        &self,
        template: &str,
        name: &str,
        storage_pool: &str,
        options: Options,
    ) -> Result<TaskInfo, Error>;

    /// Powers the VM on (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "StartVM")]
    fn start_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Powers the VM off at once, like pulling the plug (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "StopVM")]
    fn stop_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Starts a task that asks the guest to shut down (ACPI power button) and ends when
    /// it is off. After `timeout_sec` (0: 120 s) the task fails and the guest keeps
    /// running, unless `force`, which powers it off then (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "ShutdownVM")]
    fn shutdown_vm(
        &self,
        name: &str,
        timeout_sec: u32,
        force: bool,
        options: Options,
    ) -> Result<TaskInfo, Error>;

    /// Asks the guest to reboot (ACPI); returns at once (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "RebootVM")]
    fn reboot_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Resets the guest at once, like its reset button (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "ResetVM")]
    fn reset_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Pauses the guest's CPUs; its memory stays allocated (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "SuspendVM")]
    fn suspend_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Lets a paused guest run again (action `org.kimchi.vm.lifecycle`).
    #[zbus(name = "ResumeVM")]
    fn resume_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// Changes what `changes` names ([`crate::VmPatch`]); a `name` renames a shut-off
    /// VM. CPUs and memory of a running VM change its stored definition, shown by
    /// `pending_changes` until it is powered on again (action `org.kimchi.vm.manage`).
    #[zbus(name = "UpdateVM")]
    fn update_vm(&self, name: &str, changes: Options, options: Options) -> Result<VmInfo, Error>;

    /// The VM's network interfaces with their DHCP addresses (action `org.kimchi.read`).
    #[zbus(name = "ListVMIfaces")]
    fn list_vm_ifaces(&self, name: &str, options: Options) -> Result<Vec<VmIface>, Error>;

    /// Adds a NIC, live too when the VM runs (action `org.kimchi.vm.manage`).
    #[zbus(name = "AttachVMIface")]
    fn attach_vm_iface(
        &self,
        name: &str,
        spec: VmIfaceSpec,
        options: Options,
    ) -> Result<VmIface, Error>;

    /// Plugs the NIC `mac` into another `network` and/or changes its `model` (empty:
    /// unchanged); a model change of a running VM waits for its next power-on.
    #[zbus(name = "UpdateVMIface")]
    fn update_vm_iface(
        &self,
        name: &str,
        mac: &str,
        network: &str,
        model: &str,
        options: Options,
    ) -> Result<VmIface, Error>;

    #[zbus(name = "DetachVMIface")]
    fn detach_vm_iface(&self, name: &str, mac: &str, options: Options) -> Result<(), Error>;

    /// The VM's disks and CD-ROM drives (action `org.kimchi.read`).
    #[zbus(name = "ListVMStorages")]
    fn list_vm_storages(&self, name: &str, options: Options) -> Result<Vec<VmStorage>, Error>;

    /// Adds a CD-ROM or a disk ([`crate::VmStorageSpec`]) (action `org.kimchi.vm.manage`).
    #[zbus(name = "AttachVMStorage")]
    fn attach_vm_storage(
        &self,
        name: &str,
        spec: VmStorageSpec,
        options: Options,
    ) -> Result<VmStorage, Error>;

    /// Changes a CD-ROM's medium; an empty `path` ejects it.
    #[zbus(name = "UpdateVMStorage")]
    fn update_vm_storage(
        &self,
        name: &str,
        dev: &str,
        path: &str,
        options: Options,
    ) -> Result<VmStorage, Error>;

    /// Detaches the drive; a volume kimchid made for this VM is deleted with it.
    #[zbus(name = "DetachVMStorage")]
    fn detach_vm_storage(&self, name: &str, dev: &str, options: Options) -> Result<(), Error>;

    /// Stops the VM if needed, undefines it and deletes the disks kimchid created for
    /// it (action `org.kimchi.vm.manage`).
    #[zbus(name = "DeleteVM")]
    fn delete_vm(&self, name: &str, options: Options) -> Result<(), Error>;

    /// A PNG of the running VM's screen, at most a few seconds old
    /// (action `org.kimchi.vm.console`).
    #[zbus(name = "GetVMScreenshot")]
    fn get_vm_screenshot(&self, name: &str, options: Options) -> Result<Vec<u8>, Error>;

    fn list_templates(&self, options: Options) -> Result<Vec<TemplateInfo>, Error>;

    fn get_template(&self, name: &str, options: Options) -> Result<TemplateInfo, Error>;

    fn lookup_template(&self, name: &str, options: Options)
        -> Result<zbus::OwnedObjectPath, Error>;

    /// Stores a template, filling in what `spec` leaves empty
    /// (action `org.kimchi.template.manage`).
    fn create_template(&self, spec: TemplateSpec, options: Options) -> Result<TemplateInfo, Error>;

    /// Changes the fields of template `name` that `changes` names
    /// ([`crate::TemplatePatch`]); a `name` field renames it.
    fn update_template(
        &self,
        name: &str,
        changes: Options,
        options: Options,
    ) -> Result<TemplateInfo, Error>;

    fn delete_template(&self, name: &str, options: Options) -> Result<(), Error>;

    /// All storage pools, `kimchi_isos` last (action `org.kimchi.read`).
    fn list_storage_pools(&self, options: Options) -> Result<Vec<PoolInfo>, Error>;

    fn get_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    /// Defines a pool, inactive (action `org.kimchi.storage.pool-manage`).
    fn create_storage_pool(&self, spec: PoolSpec, options: Options) -> Result<PoolInfo, Error>;

    /// Starts a pool, building its directory first when missing.
    fn activate_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    fn deactivate_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    /// Undefines an inactive pool; its files stay.
    fn delete_storage_pool(&self, name: &str, options: Options) -> Result<(), Error>;

    /// The pool's volumes, refreshed from disk first (action `org.kimchi.read`).
    fn list_storage_volumes(&self, pool: &str, options: Options) -> Result<Vec<VolumeInfo>, Error>;

    fn get_storage_volume(
        &self,
        pool: &str,
        name: &str,
        options: Options,
    ) -> Result<VolumeInfo, Error>;

    /// Starts a task creating the volume (action `org.kimchi.storage.volume-manage`).
    fn create_storage_volume(
        &self,
        pool: &str,
        spec: VolumeSpec,
        options: Options,
    ) -> Result<TaskInfo, Error>;

    /// Starts a task growing the volume to `size_mib`.
    fn resize_storage_volume(
        &self,
        pool: &str,
        name: &str,
        size_mib: u64,
        options: Options,
    ) -> Result<TaskInfo, Error>;

    /// Starts a task overwriting the volume with zeros.
    fn wipe_storage_volume(
        &self,
        pool: &str,
        name: &str,
        options: Options,
    ) -> Result<TaskInfo, Error>;

    fn delete_storage_volume(&self, pool: &str, name: &str, options: Options) -> Result<(), Error>;

    /// Tasks that run or ended recently (action `org.kimchi.read`).
    fn list_tasks(&self, options: Options) -> Result<Vec<TaskInfo>, Error>;

    fn get_task(&self, id: u32, options: Options) -> Result<TaskInfo, Error>;

    /// What the host can do; public by design, answered without authorization.
    fn get_capabilities(&self, options: Options) -> Result<Capabilities, Error>;

    /// For the gateway's uid only: a socket on which kimchid serves this Manager and
    /// Sessions peer to peer (no bus daemon in between), judging every call as it
    /// judges the caller's calls on the bus, with the caller's bus name as polkit's
    /// subject. The socket closes when that bus name goes.
    fn open_gateway_link(&self, options: Options) -> Result<zbus::OwnedFd, Error>;

    /// All virtual networks by name (action `org.kimchi.read`).
    fn list_networks(&self, options: Options) -> Result<Vec<NetworkInfo>, Error>;

    fn get_network(&self, name: &str, options: Options) -> Result<NetworkInfo, Error>;

    fn lookup_network(&self, name: &str, options: Options) -> Result<zbus::OwnedObjectPath, Error>;

    /// Defines a network, inactive (action `org.kimchi.network.manage`); nat and
    /// isolated networks without a subnet get a free private /24.
    fn create_network(&self, spec: NetworkSpec, options: Options) -> Result<NetworkInfo, Error>;

    fn activate_network(&self, name: &str, options: Options) -> Result<NetworkInfo, Error>;

    fn deactivate_network(&self, name: &str, options: Options) -> Result<NetworkInfo, Error>;

    /// Changes what `changes` names: `name` and `subnet` (s, inactive networks only),
    /// `autostart` (b).
    fn update_network(
        &self,
        name: &str,
        changes: Options,
        options: Options,
    ) -> Result<NetworkInfo, Error>;

    /// Undefines an inactive network no guest uses.
    fn delete_network(&self, name: &str, options: Options) -> Result<(), Error>;

    /// The host's network interfaces (action `org.kimchi.read`).
    fn list_interfaces(&self, options: Options) -> Result<Vec<InterfaceInfo>, Error>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_uri(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_connected(&self) -> zbus::Result<bool>;

    /// Network protocols QEMU on this host can stream an ISO from.
    #[zbus(property)]
    fn stream_protocols(&self) -> zbus::Result<Vec<String>>;

    #[zbus(property)]
    fn screenshot(&self) -> zbus::Result<ScreenshotSupport>;
}

#[proxy(
    interface = "org.kimchi.Kimchi1.Sessions",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Sessions"
)]
pub trait Sessions {
    /// Checks the password with PAM (service `kimchi`) and mints an opaque token.
    fn login(
        &self,
        user: &str,
        password: &str,
        options: Options,
    ) -> Result<(String, SessionInfo), Error>;

    fn logout(&self, token: &str, options: Options) -> Result<(), Error>;
}

#[proxy(
    interface = "org.kimchi.Kimchi1.VM",
    default_service = "org.kimchi.Kimchi1"
)]
pub trait Vm {
    /// A socket carrying the guest's VNC stream (`virDomainOpenGraphicsFD`), for a
    /// console that needs no VNC TCP port (action `org.kimchi.vm.console`).
    fn open_console(&self, options: Options) -> Result<zbus::OwnedFd, Error>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
}
