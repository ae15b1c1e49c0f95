//! One module per REST resource; each turns a request into kimchid calls and their
//! answer into Kimchi's JSON.

pub mod config;
pub mod console;
pub mod interfaces;
pub mod login;
pub mod networks;
pub mod screenshots;
pub mod storage_pools;
pub mod storage_volumes;
pub mod tasks;
pub mod templates;
pub mod vm_ifaces;
pub mod vm_storages;
pub mod vms;
