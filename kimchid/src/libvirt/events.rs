//! libvirt's event loop and the raw callbacks the `virt` crate does not wrap
//! (domain, storage pool and network lifecycle events, connection close).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use tokio::sync::mpsc;
use virt::connect::Connect;
use virt::sys;

use kimchi_dbus::VmState;

use crate::engine::hypervisor::{DomainEvent, HostEvent};
use crate::error::{Error, Result};

const KEEPALIVE_INTERVAL_SECS: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

static EVENT_LOOP: Once = Once::new();

/// Registers libvirt's default event implementation and drives it from a dedicated
/// thread: callbacks and keepalives only fire while that loop runs.
pub fn start_event_loop() -> Result<()> {
    let mut result = Ok(());
    EVENT_LOOP.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            result = Err(Error::from(e));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::error!("libvirt event loop: {e}");
                }
            });
        if let Err(e) = spawned {
            result = Err(Error::Internal(format!(
                "cannot start libvirt event thread: {e}"
            )));
        }
    });
    result
}

/// Opens `uri` and hooks up lifecycle events (sent on `events`) and connection-close
/// notification (the returned receiver yields the reason once).
pub fn open(
    uri: &str,
    events: mpsc::UnboundedSender<HostEvent>,
) -> Result<(Connect, mpsc::UnboundedReceiver<String>)> {
    let conn = Connect::open(Some(uri))?;
    conn.set_keep_alive(KEEPALIVE_INTERVAL_SECS, KEEPALIVE_COUNT)?;
    let (closed_tx, closed_rx) = mpsc::unbounded_channel::<String>();
    let events_for_networks = events.clone();
    // SAFETY: the opaque boxes are owned by libvirt from here on and released through
    // the matching free callbacks; the callbacks only read them.
    unsafe {
        let close_opaque = Box::into_raw(Box::new(closed_tx)) as *mut c_void;
        if sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(on_close),
            close_opaque,
            Some(free_boxed::<mpsc::UnboundedSender<String>>),
        ) < 0
        {
            drop(Box::from_raw(
                close_opaque as *mut mpsc::UnboundedSender<String>,
            ));
            return Err(Error::from(virt::error::Error::last_error()));
        }
        let lifecycle_opaque = Box::into_raw(Box::new(events.clone())) as *mut c_void;
        let callback: unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            c_int,
            *mut c_void,
        ) -> c_int = on_lifecycle;
        let pool_opaque = Box::into_raw(Box::new(events)) as *mut c_void;
        let pool_callback: unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virStoragePoolPtr,
            c_int,
            c_int,
            *mut c_void,
        ) = on_pool_lifecycle;
        if sys::virConnectStoragePoolEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE as c_int,
            // As for domains: registered generic, called with the lifecycle signature.
            Some(std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virStoragePoolPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ),
                unsafe extern "C" fn(sys::virConnectPtr, sys::virStoragePoolPtr, *mut c_void),
            >(pool_callback)),
            pool_opaque,
            Some(free_boxed::<mpsc::UnboundedSender<HostEvent>>),
        ) < 0
        {
            drop(Box::from_raw(
                pool_opaque as *mut mpsc::UnboundedSender<HostEvent>,
            ));
            return Err(Error::from(virt::error::Error::last_error()));
        }
        if sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            // libvirt's registration takes the generic signature and calls back with the
            // event-specific one; this is the documented C idiom (VIR_DOMAIN_EVENT_CALLBACK).
            Some(std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virDomainPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ) -> c_int,
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
            >(callback)),
            lifecycle_opaque,
            Some(free_boxed::<mpsc::UnboundedSender<HostEvent>>),
        ) < 0
        {
            drop(Box::from_raw(
                lifecycle_opaque as *mut mpsc::UnboundedSender<HostEvent>,
            ));
            return Err(Error::from(virt::error::Error::last_error()));
        }
    }
    register_domain_changes(&conn, &events_for_networks)?;
    register_network_lifecycle(&conn, events_for_networks)?;
    Ok((conn, closed_rx))
}

/// Sends `HostEvent::Domain` with `Changed` when a device is hot-plugged or unplugged
/// (the guest may finish an unplug long after the call) and when a title, description
/// or other metadata changes: no lifecycle event tells of these.
fn register_domain_changes(
    conn: &Connect,
    events: &mpsc::UnboundedSender<HostEvent>,
) -> Result<()> {
    // Device events pass the device's alias, metadata events the kind and namespace:
    // a callback that reads only the domain serves all three.
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    type Device =
        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
    type Metadata = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        c_int,
        *const c_char,
        *mut c_void,
    );
    let device: Device = on_domain_device;
    let metadata: Metadata = on_domain_metadata;
    // SAFETY: as in `open`; each registration gets its own box, freed by `free_boxed`.
    unsafe {
        let callbacks: [(u32, Generic); 3] = [
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                std::mem::transmute::<Device, Generic>(device),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                std::mem::transmute::<Device, Generic>(device),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                std::mem::transmute::<Metadata, Generic>(metadata),
            ),
        ];
        for (id, callback) in callbacks {
            let opaque = Box::into_raw(Box::new(events.clone())) as *mut c_void;
            if sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                id as c_int,
                Some(callback),
                opaque,
                Some(free_boxed::<mpsc::UnboundedSender<HostEvent>>),
            ) < 0
            {
                drop(Box::from_raw(
                    opaque as *mut mpsc::UnboundedSender<HostEvent>,
                ));
                return Err(Error::from(virt::error::Error::last_error()));
            }
        }
    }
    Ok(())
}

/// Sends `HostEvent::Network` for every network defined, undefined, started or stopped.
fn register_network_lifecycle(
    conn: &Connect,
    events: mpsc::UnboundedSender<HostEvent>,
) -> Result<()> {
    // SAFETY: as in `open`: the box is libvirt's from here on, freed by `free_boxed`.
    unsafe {
        let network_opaque = Box::into_raw(Box::new(events)) as *mut c_void;
        let network_callback: unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virNetworkPtr,
            c_int,
            c_int,
            *mut c_void,
        ) = on_network_lifecycle;
        if sys::virConnectNetworkEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_NETWORK_EVENT_ID_LIFECYCLE as c_int,
            // As for domains: registered generic, called with the lifecycle signature.
            Some(std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virNetworkPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ),
                unsafe extern "C" fn(sys::virConnectPtr, sys::virNetworkPtr, *mut c_void),
            >(network_callback)),
            network_opaque,
            Some(free_boxed::<mpsc::UnboundedSender<HostEvent>>),
        ) < 0
        {
            drop(Box::from_raw(
                network_opaque as *mut mpsc::UnboundedSender<HostEvent>,
            ));
            return Err(Error::from(virt::error::Error::last_error()));
        }
    }
    Ok(())
}

unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    let tx = unsafe { &*(opaque as *const mpsc::UnboundedSender<String>) };
    let why = match reason as u32 {
        sys::VIR_CONNECT_CLOSE_REASON_EOF => "libvirtd closed the connection",
        sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => "keepalive timed out",
        sys::VIR_CONNECT_CLOSE_REASON_CLIENT => "closed by client",
        _ => "connection error",
    };
    let _ = tx.send(why.to_owned());
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let tx = unsafe { &*(opaque as *const mpsc::UnboundedSender<HostEvent>) };
    if let Some(uuid) = unsafe { domain_uuid(dom) } {
        let event = domain_event(event as u32);
        let _ = tx.send(HostEvent::Domain { uuid, event });
    }
    0
}

/// The UUID of the domain an event is about.
unsafe fn domain_uuid(dom: sys::virDomainPtr) -> Option<String> {
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(uuid.to_string_lossy().into_owned())
}

unsafe extern "C" fn on_domain_device(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    unsafe { send_changed(dom, opaque) }
}

unsafe extern "C" fn on_domain_metadata(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _kind: c_int,
    _nsuri: *const c_char,
    opaque: *mut c_void,
) {
    unsafe { send_changed(dom, opaque) }
}

/// Tells the model to re-read the domain.
unsafe fn send_changed(dom: sys::virDomainPtr, opaque: *mut c_void) {
    let tx = unsafe { &*(opaque as *const mpsc::UnboundedSender<HostEvent>) };
    if let Some(uuid) = unsafe { domain_uuid(dom) } {
        let _ = tx.send(HostEvent::Domain {
            uuid,
            event: DomainEvent::Changed,
        });
    }
}

unsafe extern "C" fn on_pool_lifecycle(
    _conn: sys::virConnectPtr,
    pool: sys::virStoragePoolPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) {
    let tx = unsafe { &*(opaque as *const mpsc::UnboundedSender<HostEvent>) };
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if unsafe { sys::virStoragePoolGetUUIDString(pool, buf.as_mut_ptr()) } == 0 {
        let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let _ = tx.send(HostEvent::Pool { uuid });
    }
}

unsafe extern "C" fn on_network_lifecycle(
    _conn: sys::virConnectPtr,
    net: sys::virNetworkPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) {
    let tx = unsafe { &*(opaque as *const mpsc::UnboundedSender<HostEvent>) };
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if unsafe { sys::virNetworkGetUUIDString(net, buf.as_mut_ptr()) } == 0 {
        let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let _ = tx.send(HostEvent::Network { uuid });
    }
}

/// What a lifecycle event says of the domain's state, so the model can skip re-reading
/// a domain whose change it already knows (kimchid made it).
fn domain_event(event: u32) -> DomainEvent {
    match event {
        sys::VIR_DOMAIN_EVENT_STARTED | sys::VIR_DOMAIN_EVENT_RESUMED => {
            DomainEvent::Became(VmState::Running)
        }
        sys::VIR_DOMAIN_EVENT_SUSPENDED => DomainEvent::Became(VmState::Paused),
        sys::VIR_DOMAIN_EVENT_STOPPED => DomainEvent::Became(VmState::Shutoff),
        sys::VIR_DOMAIN_EVENT_CRASHED => DomainEvent::Became(VmState::Crashed),
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => DomainEvent::Became(VmState::PmSuspended),
        sys::VIR_DOMAIN_EVENT_UNDEFINED => DomainEvent::Undefined,
        _ => DomainEvent::Changed,
    }
}

unsafe extern "C" fn free_boxed<T>(opaque: *mut c_void) {
    drop(unsafe { Box::from_raw(opaque as *mut T) });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn network_lifecycle_is_reported_on_the_test_driver() {
        start_event_loop().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The test driver has no keepalive, so not `open` but the registration alone.
        let conn = Connect::open(Some("test:///default")).unwrap();
        register_network_lifecycle(&conn, tx).unwrap();
        let name = format!("kimchi-unit-events-{}", std::process::id());
        let xml = super::super::xml::Element::new("network")
            .child(super::super::xml::Element::leaf("name", name.as_str()))
            .render();
        let net = conn.define_network_xml(&xml).unwrap();
        let uuid = net.uuid_string().unwrap();
        net.undefine().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < 2 && std::time::Instant::now() < deadline {
            match rx.try_recv() {
                Ok(HostEvent::Network { uuid: u }) if u == uuid => seen += 1,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        assert_eq!(seen, 2, "defined and undefined events for {uuid}");
    }
}
