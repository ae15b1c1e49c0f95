//! The cumulative counters behind the guests' activity figures, read for all running
//! domains in one bulk call; `crate::stats` turns successive samples into rates.
//! `virt` leaks the records of its own bulk-stats wrapper, so this walks the raw list.

use std::ffi::{c_char, CStr};

use virt::connect::Connect;
use virt::sys;

use crate::engine::hypervisor::DomainCounters;
use crate::error::{Error, Result};

const STATS: sys::virDomainStatsTypes = sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

pub fn sample(conn: &Connect) -> Result<Vec<DomainCounters>> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: the connection pointer is live for the borrow of `conn`; libvirt only
    // writes the out-pointer, whose list the guard below frees.
    let n = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            STATS,
            &mut records,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
    };
    if n < 0 {
        return Err(Error::from(virt::error::Error::last_error()));
    }
    let list = RecordList(records);
    if n == 0 || list.0.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: on success libvirt returns `n` valid record pointers, alive until the
    // guard frees them after the slice's last use.
    let records = unsafe { std::slice::from_raw_parts(list.0, n as usize) };
    records
        .iter()
        // SAFETY: each entry points to a record owned by the list (see above).
        .map(|&r| counters(unsafe { &*r }))
        .collect()
}

/// Frees the records, their parameters and their domain references on every path.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        // SAFETY: the list came from virConnectGetAllDomainStats (or is NULL, which
        // libvirt ignores) and is freed exactly once, here.
        unsafe { sys::virDomainStatsRecordListFree(self.0) }
    }
}

fn counters(record: &sys::virDomainStatsRecord) -> Result<DomainCounters> {
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: the record holds a reference to `dom`; the buffer has the size libvirt
    // requires.
    if unsafe { sys::virDomainGetUUIDString(record.dom, buf.as_mut_ptr()) } != 0 {
        // Taken now: freeing the list (virDomainFree) resets libvirt's last error.
        return Err(Error::from(virt::error::Error::last_error()));
    }
    // SAFETY: libvirt NUL-terminated the UUID it wrote into `buf`.
    let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let params: &[sys::virTypedParameter] = if record.params.is_null() {
        &[]
    } else {
        // SAFETY: libvirt gives `nparams` parameters, owned by the record.
        unsafe { std::slice::from_raw_parts(record.params, record.nparams.max(0) as usize) }
    };
    Ok(from_params(uuid, params))
}

fn from_params(uuid: String, params: &[sys::virTypedParameter]) -> DomainCounters {
    let mut c = DomainCounters {
        uuid,
        cpu_time_ns: 0,
        vcpus: 1,
        net_bytes: 0,
        block_bytes: 0,
    };
    for p in params {
        // Bounded by the field's size, whatever libvirt put there.
        let field = p.field.map(|b| b as u8);
        let Some(name) = CStr::from_bytes_until_nul(&field)
            .ok()
            .and_then(|n| n.to_str().ok())
        else {
            continue;
        };
        let Some(value) = value(p) else { continue };
        match name {
            "cpu.time" => c.cpu_time_ns = value,
            "vcpu.current" => c.vcpus = u32::try_from(value).unwrap_or(u32::MAX).max(1),
            _ if matches!(indexed(name, "net"), Some("rx.bytes" | "tx.bytes")) => {
                c.net_bytes = c.net_bytes.saturating_add(value)
            }
            _ if matches!(indexed(name, "block"), Some("rd.bytes" | "wr.bytes")) => {
                c.block_bytes = c.block_bytes.saturating_add(value)
            }
            _ => {}
        }
    }
    c
}

/// A parameter's integer value; the counters are never negative, nor other types.
fn value(p: &sys::virTypedParameter) -> Option<u64> {
    // SAFETY: `type_` names the union member libvirt wrote.
    unsafe {
        match p.type_ as sys::virTypedParameterType {
            sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul),
            sys::VIR_TYPED_PARAM_UINT => Some(p.value.ui.into()),
            sys::VIR_TYPED_PARAM_LLONG => u64::try_from(p.value.l).ok(),
            sys::VIR_TYPED_PARAM_INT => u64::try_from(p.value.i).ok(),
            _ => None,
        }
    }
}

/// What follows `<prefix>.<N>.` in a per-device name such as `net.0.rx.bytes`.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let (index, field) = name
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .split_once('.')?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_device_names_are_recognised() {
        assert_eq!(indexed("net.0.rx.bytes", "net"), Some("rx.bytes"));
        assert_eq!(indexed("block.12.wr.bytes", "block"), Some("wr.bytes"));
        assert_eq!(indexed("net.count", "net"), None);
        assert_eq!(indexed("block.0.name", "net"), None);
        assert_eq!(indexed("network.0.rx.bytes", "net"), None);
    }

    fn param(
        name: &str,
        type_: u32,
        value: sys::_virTypedParameter__bindgen_ty_1,
    ) -> sys::virTypedParameter {
        let mut field = [0 as c_char; sys::VIR_TYPED_PARAM_FIELD_LENGTH as usize];
        for (dst, src) in field.iter_mut().zip(name.bytes()) {
            *dst = src as c_char;
        }
        sys::virTypedParameter {
            field,
            type_: type_ as i32,
            value,
        }
    }

    fn ull(name: &str, ul: u64) -> sys::virTypedParameter {
        param(
            name,
            sys::VIR_TYPED_PARAM_ULLONG,
            sys::_virTypedParameter__bindgen_ty_1 { ul },
        )
    }

    fn uint(name: &str, ui: u32) -> sys::virTypedParameter {
        param(
            name,
            sys::VIR_TYPED_PARAM_UINT,
            sys::_virTypedParameter__bindgen_ty_1 { ui },
        )
    }

    // The test driver reports no CPU, vCPU, interface or block stats: this is what
    // qemu's look like.
    #[test]
    fn counters_are_summed_over_devices() {
        let params = [
            ull("cpu.time", 7_000),
            ull("cpu.user", 3_000),
            uint("vcpu.current", 4),
            uint("vcpu.maximum", 8),
            uint("net.count", 2),
            ull("net.0.rx.bytes", 100),
            ull("net.0.tx.bytes", 20),
            ull("net.0.rx.pkts", 5),
            ull("net.1.rx.bytes", 1_000),
            uint("block.count", 1),
            param(
                "block.0.name",
                sys::VIR_TYPED_PARAM_STRING,
                sys::_virTypedParameter__bindgen_ty_1 {
                    s: std::ptr::null_mut(),
                },
            ),
            ull("block.0.rd.bytes", 4_096),
            ull("block.0.wr.bytes", 512),
            ull("block.0.allocation", 1 << 30),
            param(
                "block.0.wr.bytes",
                sys::VIR_TYPED_PARAM_LLONG,
                sys::_virTypedParameter__bindgen_ty_1 { l: -1 },
            ),
        ];
        assert_eq!(
            from_params("u".into(), &params),
            DomainCounters {
                uuid: "u".into(),
                cpu_time_ns: 7_000,
                vcpus: 4,
                net_bytes: 1_120,
                block_bytes: 4_608,
            }
        );
        assert_eq!(from_params("u".into(), &[]).vcpus, 1);
    }

    #[test]
    fn samples_the_running_test_domain() {
        let conn = Connect::open(Some("test:///default")).expect("test driver");
        let uuid = conn
            .lookup_domain_by_name("test")
            .and_then(|d| d.uuid_string())
            .expect("test domain");
        let sampled = sample(&conn).expect("bulk stats");
        let test = sampled
            .iter()
            .find(|c| c.uuid == uuid)
            .expect("running test domain sampled");
        assert!(test.vcpus >= 1);
    }
}
