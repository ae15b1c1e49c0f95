//! D-Bus calls, as root on the system bus: kimchid's Manager and Peer, and
//! libvirt-dbus (`org.libvirt`, the service Cockpit Machines reads guests through).

use std::collections::HashMap;

use kimchi_dbus::{ManagerProxy, BUS_NAME, MANAGER_PATH};
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

use crate::Result;

const LIBVIRT_DBUS: &str = "org.libvirt";
const LIBVIRT_DBUS_QEMU: &str = "/org/libvirt/QEMU";
const LIBVIRT_DBUS_CONNECT: &str = "org.libvirt.Connect";
const LIBVIRT_DBUS_DOMAIN: &str = "org.libvirt.Domain";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

pub type Options = HashMap<String, OwnedVariant>;

pub async fn manager(conn: &Connection) -> Result<ManagerProxy<'static>> {
    // Method calls only: a property cache would add a GetAll to the first call.
    Ok(ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

/// `org.freedesktop.DBus.Peer.Ping` to kimchid: a round trip through the bus and
/// zbus, without kimchid's own work.
pub async fn ping_kimchid(conn: &Connection) -> Result<()> {
    conn.call_method(
        Some(BUS_NAME),
        MANAGER_PATH,
        Some("org.freedesktop.DBus.Peer"),
        "Ping",
        &(),
    )
    .await?;
    Ok(())
}

/// The domain's object path at libvirt-dbus (`Connect.DomainLookupByName`).
pub async fn libvirt_dbus_domain(conn: &Connection, name: &str) -> Result<OwnedObjectPath> {
    let reply = conn
        .call_method(
            Some(LIBVIRT_DBUS),
            LIBVIRT_DBUS_QEMU,
            Some(LIBVIRT_DBUS_CONNECT),
            "DomainLookupByName",
            &(name,),
        )
        .await?;
    Ok(reply.body().deserialize()?)
}

/// Every domain's object path (`Connect.ListDomains`, all of them).
pub async fn libvirt_dbus_domains(conn: &Connection) -> Result<Vec<OwnedObjectPath>> {
    let reply = conn
        .call_method(
            Some(LIBVIRT_DBUS),
            LIBVIRT_DBUS_QEMU,
            Some(LIBVIRT_DBUS_CONNECT),
            "ListDomains",
            &(0u32,),
        )
        .await?;
    Ok(reply.body().deserialize()?)
}

/// `Properties.GetAll("org.libvirt.Domain")` on a domain, decoded as a client would:
/// what a guest list reads per guest there.
pub async fn libvirt_dbus_get_all(conn: &Connection, domain: &OwnedObjectPath) -> Result<()> {
    let reply = conn
        .call_method(
            Some(LIBVIRT_DBUS),
            domain,
            Some(PROPERTIES),
            "GetAll",
            &(LIBVIRT_DBUS_DOMAIN,),
        )
        .await?;
    let _: Options = reply.body().deserialize()?;
    Ok(())
}
