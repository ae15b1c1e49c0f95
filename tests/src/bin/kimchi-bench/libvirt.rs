//! libvirt itself (qemu:///system): the bulk statistics call a guest list could be
//! built from, and the guest whose state changes are timed.

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::Result;

pub struct Libvirt(Connect);

impl Libvirt {
    pub fn open() -> Result<Libvirt> {
        Ok(Libvirt(Connect::open(Some("qemu:///system"))?))
    }

    pub fn domain(&self, name: &str) -> Result<Domain> {
        Ok(self.0.lookup_domain_by_name(name)?)
    }

    /// One `virConnectGetAllDomainStats(conn, 0, &records, 0)`: libvirt's default
    /// statistics of every domain; returns how many it reported. The records are
    /// freed at once (`virt` wraps this call but leaks them).
    pub fn all_domain_stats(&self) -> Result<usize> {
        let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
        // SAFETY: the connection is live for the borrow of `self`; libvirt only writes
        // the out-pointer, whose list is freed below.
        let n = unsafe { sys::virConnectGetAllDomainStats(self.0.as_ptr(), 0, &mut records, 0) };
        if n < 0 {
            return Err(virt::error::Error::last_error().into());
        }
        // SAFETY: the list came from virConnectGetAllDomainStats (NULL is ignored) and
        // is freed exactly once, here; nothing of it was kept.
        unsafe { sys::virDomainStatsRecordListFree(records) };
        Ok(n as usize)
    }
}
