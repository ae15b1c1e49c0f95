//! The libosinfo database (Debian package osinfo-db, `os/<vendor>/<name>.xml`),
//! read directly rather than through libosinfo: kimchid only needs to map an ISO
//! volume id to a distro and version, and that version to sensible VM defaults.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use regex_lite::Regex;

use crate::error::{Error, Result};

/// The database as the engine shares it (templates and the ISO view): read on first
/// use, consulted on the blocking pool, since loading it and probing ISO headers is
/// file I/O.
pub struct OsDatabase {
    dir: PathBuf,
    db: OnceLock<OsDb>,
}

impl OsDatabase {
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(OsDatabase {
            dir: dir.into(),
            db: OnceLock::new(),
        })
    }

    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&OsDb) -> T + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this.db.get_or_init(|| OsDb::load(&this.dir))))
            .await
            .map_err(|e| Error::Internal(format!("osinfo lookup failed: {e}")))
    }
}

/// Device ids that decide virtio support: the legacy and 1.0 PCI ids of
/// virtio-block and virtio-net.
const VIRTIO_DISK: [&str; 2] = [
    "http://pcisig.com/pci/1af4/1001",
    "http://pcisig.com/pci/1af4/1042",
];
const VIRTIO_NET: [&str; 2] = [
    "http://pcisig.com/pci/1af4/1000",
    "http://pcisig.com/pci/1af4/1041",
];

/// Defaults for a new VM running a given OS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsProfile {
    /// The OS's first short id (what `virt-install --os-variant` takes), e.g. "ubuntu22.04".
    pub short_id: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// In GiB, rounded up.
    pub disk_gb: Option<u64>,
    pub virtio_disk: bool,
    pub virtio_net: bool,
}

#[derive(Debug, Default)]
pub struct OsDb {
    /// Every `<os>`, in file path order then document order.
    oses: Vec<OsEntry>,
    /// `<os id=…>` to index in `oses`, for inheritance.
    by_id: HashMap<String, usize>,
    /// Volume id patterns in the order `identify` tries them.
    media: Vec<Media>,
    /// Answers by volume id. One lookup compiles two thousand patterns, thousands of
    /// short-lived allocations that left the heap fragmented when template creations
    /// ran side by side, while a host keeps a handful of images; the lock also makes
    /// concurrent lookups compile in turn.
    identified: Mutex<HashMap<String, Option<(String, String)>>>,
}

/// Volume ids whose answers are kept; more distinct ids start the memo afresh.
const IDENTIFIED_MAX: usize = 64;

#[derive(Debug)]
struct OsEntry {
    distro: String,
    /// Empty for rolling releases, which have no `<version>`.
    version: String,
    short_id: Option<String>,
    /// derives-from ids first, then upgrades ids.
    parents: Vec<String>,
    resources: Resources,
    /// What this OS itself says about each id of `VIRTIO_DISK` then `VIRTIO_NET`:
    /// `Some(false)` for `supported="false"`, `None` when it does not mention it.
    virtio: [Option<bool>; 4],
}

#[derive(Debug, Default, Clone, Copy)]
struct Resources {
    cpus: Option<u64>,
    ram: Option<u64>,
    storage: Option<u64>,
}

#[derive(Debug)]
struct Media {
    /// Lower sorts first: x86_64, then arch-independent media, then the rest.
    rank: u8,
    os: usize,
    /// Compiled when an image is identified, not kept: two thousand compiled
    /// patterns would hold kimchid's memory several times over for a rare lookup.
    pattern: String,
    /// The media also requires an exact volume size, which we do not check; such
    /// entries carry generic ids ("CentOS") and are only a last resort.
    sized: bool,
}

impl OsDb {
    /// Loads `dir/os/*/*.xml`. Never fails: unreadable or malformed files are
    /// skipped, and a missing directory gives an empty database.
    pub fn load(dir: &Path) -> OsDb {
        let mut db = OsDb::default();
        for path in xml_files(&dir.join("os")) {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    tracing::debug!("osinfo: skipping {}: {e}", path.display());
                    continue;
                }
            };
            match roxmltree::Document::parse(&text) {
                Ok(doc) => db.add_document(&doc, &path),
                Err(e) => tracing::debug!("osinfo: skipping {}: {e}", path.display()),
            }
        }
        // Stable sort: within a rank, file path order then document order.
        db.media.sort_by_key(|m| m.rank);
        tracing::debug!(
            "osinfo: {} operating systems, {} media patterns from {}",
            db.oses.len(),
            db.media.len(),
            dir.display()
        );
        db
    }

    /// The (distro, version) of the first media whose volume id pattern matches:
    /// whole-id matches first, and among them media that need no volume size.
    pub fn identify(&self, volume_id: &str) -> Option<(String, String)> {
        let volume_id = volume_id.trim_end_matches(' ');
        // A panic while holding the lock leaves only whole answers behind.
        let mut identified = self
            .identified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(answer) = identified.get(volume_id) {
            return answer.clone();
        }
        let answer = self.match_patterns(volume_id);
        if identified.len() >= IDENTIFIED_MAX {
            identified.clear();
        }
        identified.insert(volume_id.to_string(), answer.clone());
        answer
    }

    fn match_patterns(&self, volume_id: &str) -> Option<(String, String)> {
        // libosinfo also matches the volume size and the system, publisher and
        // application ids, which lets the database carry broad volume ids
        // ("CentOS", "1-x86_64") that match inside other distros' ids. A pattern
        // covering the whole id is more specific; anchored copies are compiled
        // only for the few that match.
        let mut best: Option<(u8, &Media)> = None;
        let matches = |pattern: &str| Regex::new(pattern).is_ok_and(|re| re.is_match(volume_id));
        for media in self.media.iter().filter(|m| matches(&m.pattern)) {
            let whole = matches(&format!("^(?:{})$", media.pattern));
            let tier = match (whole, media.sized) {
                (true, false) => 0,
                (true, true) => 1,
                (false, _) => 2,
            };
            if tier == 0 {
                best = Some((tier, media));
                break;
            }
            if best.is_none_or(|(t, _)| tier < t) {
                best = Some((tier, media));
            }
        }
        best.map(|(_, m)| {
            let os = &self.oses[m.os];
            (os.distro.clone(), os.version.clone())
        })
    }

    /// VM defaults for an OS, with resources and devices inherited from the OS it
    /// derives from or upgrades when it does not state them itself.
    pub fn lookup(&self, distro: &str, version: &str) -> Option<OsProfile> {
        let start = self
            .oses
            .iter()
            .position(|os| os.distro == distro && os.version == version)?;
        let chain = self.ancestry(start);
        // For each value, the nearest OS that states it wins.
        let own = |f: fn(&Resources) -> Option<u64>| {
            chain.iter().find_map(|&i| f(&self.oses[i].resources))
        };
        let supported = |k: usize| {
            chain
                .iter()
                .find_map(|&i| self.oses[i].virtio[k])
                .unwrap_or(false)
        };
        Some(OsProfile {
            short_id: self.oses[start].short_id.clone(),
            cpus: own(|r| r.cpus).and_then(|n| u32::try_from(n).ok()),
            memory_mib: own(|r| r.ram).map(|b| b.div_ceil(1 << 20)),
            disk_gb: own(|r| r.storage).map(|b| b.div_ceil(1 << 30)),
            virtio_disk: supported(0) || supported(1),
            virtio_net: supported(2) || supported(3),
        })
    }

    /// `start` and its ancestors, nearest first, each once. Chains run deep (Ubuntu
    /// 22.04 gets virtio from 17.04, ten releases up), so there is no depth limit;
    /// visiting each OS once is what stops cycles.
    fn ancestry(&self, start: usize) -> Vec<usize> {
        let mut chain = vec![start];
        let mut seen = HashSet::from([start]);
        let mut next = 0;
        while let Some(&i) = chain.get(next) {
            next += 1;
            for parent in &self.oses[i].parents {
                if let Some(&p) = self.by_id.get(parent) {
                    if seen.insert(p) {
                        chain.push(p);
                    }
                }
            }
        }
        chain
    }

    fn add_document(&mut self, doc: &roxmltree::Document, path: &Path) {
        for os in doc
            .root_element()
            .children()
            .filter(|n| n.has_tag_name("os"))
        {
            let Some(distro) = child_text(os, "distro") else {
                tracing::debug!("osinfo: <os> without <distro> in {}", path.display());
                continue;
            };
            let index = self.oses.len();
            if let Some(id) = os.attribute("id") {
                // First definition wins, like the path order used everywhere else.
                self.by_id.entry(id.to_string()).or_insert(index);
            }
            let mut parents = Vec::new();
            for tag in ["derives-from", "upgrades"] {
                parents.extend(
                    os.children()
                        .filter(|n| n.has_tag_name(tag))
                        .filter_map(|n| n.attribute("id"))
                        .map(str::to_string),
                );
            }
            self.oses.push(OsEntry {
                distro: distro.to_string(),
                version: child_text(os, "version").unwrap_or_default().to_string(),
                short_id: child_text(os, "short-id").map(str::to_string),
                parents,
                resources: resources(os),
                virtio: virtio(os),
            });
            self.add_media(os, index, path);
        }
    }

    fn add_media(&mut self, os: roxmltree::Node, index: usize, path: &Path) {
        for media in os.children().filter(|n| n.has_tag_name("media")) {
            let rank = match media.attribute("arch") {
                Some("x86_64") => 0,
                Some("all") | None => 1,
                Some(_) => 2,
            };
            for iso in media.children().filter(|n| n.has_tag_name("iso")) {
                let Some(pattern) = child_text(iso, "volume-id") else {
                    continue;
                };
                let sized = iso.children().any(|n| n.has_tag_name("volume-size"));
                // The database is written for GRegex (PCRE); the few patterns using
                // lookaround or backreferences cannot be expressed and are skipped.
                match Regex::new(pattern) {
                    Ok(_) => self.media.push(Media {
                        rank,
                        os: index,
                        pattern: pattern.to_owned(),
                        sized,
                    }),
                    Err(e) => tracing::debug!(
                        "osinfo: skipping volume id {pattern:?} in {}: {e}",
                        path.display()
                    ),
                }
            }
        }
    }
}

/// `os/*/*.xml`, sorted by path; the `*.d` directories (Windows driver lists) are left out.
fn xml_files(os_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(vendors) = std::fs::read_dir(os_dir) else {
        tracing::debug!("osinfo: no database at {}", os_dir.display());
        return files;
    };
    for vendor in vendors.flatten() {
        let Ok(entries) = std::fs::read_dir(vendor.path()) else {
            continue;
        };
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "xml")),
        );
    }
    files.sort();
    files
}

fn child_text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.has_tag_name(tag))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// This OS's own resources for x86_64 (or any arch), recommended over minimum.
fn resources(os: roxmltree::Node) -> Resources {
    let mut blocks: Vec<_> = os
        .children()
        .filter(|n| n.has_tag_name("resources"))
        .filter_map(|n| match n.attribute("arch") {
            Some("x86_64") => Some((0, n)),
            Some("all") => Some((1, n)),
            _ => None,
        })
        .collect();
    blocks.sort_by_key(|&(rank, _)| rank);
    let levels: Vec<_> = ["recommended", "minimum"]
        .iter()
        .flat_map(|level| {
            blocks
                .iter()
                .filter_map(move |(_, block)| block.children().find(|n| n.has_tag_name(*level)))
        })
        .collect();
    let first = |tag: &str| {
        levels
            .iter()
            .find_map(|level| child_text(*level, tag)?.parse::<u64>().ok())
    };
    Resources {
        cpus: first("n-cpus"),
        ram: first("ram"),
        storage: first("storage"),
    }
}

fn virtio(os: roxmltree::Node) -> [Option<bool>; 4] {
    let mut found = [None; 4];
    let devices = os
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(|n| n.has_tag_name("device")));
    for device in devices {
        let Some(id) = device.attribute("id") else {
            continue;
        };
        if let Some(k) = VIRTIO_DISK.iter().chain(&VIRTIO_NET).position(|v| *v == id) {
            found[k] = Some(device.attribute("supported") != Some("false"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    const SYSTEM_DB: &str = "/usr/share/osinfo";

    /// The installed osinfo-db, loaded once for all tests.
    fn system_db() -> &'static OsDb {
        static DB: OnceLock<OsDb> = OnceLock::new();
        DB.get_or_init(|| {
            let start = std::time::Instant::now();
            let db = OsDb::load(Path::new(SYSTEM_DB));
            eprintln!(
                "osinfo: loaded {} oses, {} media patterns in {:?}",
                db.oses.len(),
                db.media.len(),
                start.elapsed()
            );
            assert!(
                !db.oses.is_empty(),
                "osinfo-db must be installed in {SYSTEM_DB}"
            );
            db
        })
    }

    fn pair(distro: &str, version: &str) -> Option<(String, String)> {
        Some((distro.to_string(), version.to_string()))
    }

    #[test]
    fn identifies_volume_ids() {
        let db = system_db();
        assert_eq!(
            db.identify("Ubuntu-Server 22.04.1 LTS amd64"),
            pair("ubuntu", "22.04")
        );
        assert_eq!(db.identify("Debian 11.6.0 amd64 n"), pair("debian", "11"));
        // Mageia 1's "1-x86_64" also matches inside this id.
        assert_eq!(db.identify("Rocky-9-1-x86_64-dvd"), pair("rocky", "9"));
        assert_eq!(db.identify("MY RANDOM DISK"), None);
    }

    #[test]
    fn answers_are_remembered_within_a_bound() {
        let db = OsDb::load(Path::new(SYSTEM_DB));
        let ubuntu = "Ubuntu-Server 22.04.1 LTS amd64";
        assert_eq!(db.identify(&format!("{ubuntu}  ")), pair("ubuntu", "22.04"));
        assert_eq!(db.identify(ubuntu), pair("ubuntu", "22.04"));
        assert_eq!(db.identified.lock().unwrap().len(), 1);
        for i in 0..IDENTIFIED_MAX {
            assert_eq!(db.identify(&format!("DISK {i}")), None);
        }
        assert!(db.identified.lock().unwrap().len() <= IDENTIFIED_MAX);
        assert_eq!(db.identify(ubuntu), pair("ubuntu", "22.04"));
        assert_eq!(db.identify("Debian 11.6.0 amd64 n"), pair("debian", "11"));
    }

    #[test]
    fn profile_inherits_devices() {
        let profile = system_db().lookup("ubuntu", "22.04").unwrap();
        assert_eq!(profile.short_id.as_deref(), Some("ubuntu22.04"));
        // 22.04 states its resources; virtio devices come from older releases.
        assert_eq!(profile.memory_mib, Some(4096));
        assert_eq!(profile.disk_gb, Some(25));
        assert!(profile.virtio_disk);
        assert!(profile.virtio_net);
    }

    #[test]
    fn unknown_os() {
        let db = system_db();
        assert_eq!(db.lookup("nosuchos", "1.0"), None);
        assert_eq!(db.lookup("ubuntu", "0.1"), None);
    }

    #[test]
    fn missing_dir_is_empty() {
        let db = OsDb::load(Path::new("/nonexistent/osinfo"));
        assert_eq!(db.identify("Ubuntu-Server 22.04.1 LTS amd64"), None);
        assert_eq!(db.lookup("ubuntu", "22.04"), None);
    }

    /// A small hand-made database: inheritance, `supported="false"`, cycles,
    /// arch ranking, a lookahead pattern, and a file that does not parse.
    #[test]
    fn synthetic_db() {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "kimchid-osinfo-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let vendor = root.join("os/example.org");
        std::fs::create_dir_all(vendor.join("extra.d")).unwrap();
        let os = |id: &str, version: &str, body: &str| {
            format!(
                r#"<libosinfo version="0.0.1"><os id="http://example.org/ex/{id}">
                <short-id>ex{version}</short-id><distro>ex</distro><version>{version}</version>
                {body}</os></libosinfo>"#
            )
        };
        let files = [
            (
                "ex-1.xml",
                os(
                    "1",
                    "1",
                    r#"<derives-from id="http://example.org/ex/3"/>
                    <resources arch="all"><minimum><n-cpus>1</n-cpus><ram>1073741824</ram></minimum>
                    <recommended><ram>2147483648</ram><storage>1</storage></recommended></resources>
                    <resources arch="x86_64"><recommended><n-cpus>4</n-cpus></recommended></resources>
                    <devices><device id="http://pcisig.com/pci/1af4/1001"/>
                    <device id="http://pcisig.com/pci/1af4/1000"/></devices>
                    <media arch="i686"><iso><volume-id>EX DISC</volume-id></iso></media>
                    <media arch="i686"><iso><volume-id>EX LIVE 1</volume-id></iso></media>"#,
                ),
            ),
            (
                "ex-2.xml",
                os(
                    "2",
                    "2",
                    r#"<upgrades id="http://example.org/ex/1"/>
                    <devices><device id="http://pcisig.com/pci/1af4/1000" supported="false"/></devices>
                    <media arch="x86_64"><iso><volume-id>^EX DISC$</volume-id></iso></media>
                    <media arch="x86_64"><iso><volume-id>EX (?!BAD)</volume-id></iso></media>
                    <media arch="x86_64"><iso><volume-id>EX</volume-id></iso></media>"#,
                ),
            ),
            (
                "ex-3.xml",
                os(
                    "3",
                    "3",
                    r#"<derives-from id="http://example.org/ex/2"/>
                    <media arch="x86_64"><iso><volume-id>EX LIVE( \d)?</volume-id>
                    <volume-size>1</volume-size></iso></media>"#,
                ),
            ),
            ("ex-4.xml", "<libosinfo><os>".to_string()),
            ("extra.d/ex-5.xml", os("5", "5", "")),
        ];
        for (name, text) in files {
            std::fs::write(vendor.join(name), text).unwrap();
        }
        let db = OsDb::load(&root);
        std::fs::remove_dir_all(&root).unwrap();

        // Whole-id matches: x86_64 media first, then other arches, then media
        // that also need a volume size; only then patterns matching part of the id.
        assert_eq!(db.identify("EX DISC   "), pair("ex", "2"));
        assert_eq!(db.identify("EX LIVE 1"), pair("ex", "1"));
        assert_eq!(db.identify("EX LIVE"), pair("ex", "3"));
        assert_eq!(db.identify("AN EX DISC 2"), pair("ex", "2"));
        assert_eq!(db.identify("NOTHING"), None);
        assert_eq!(db.lookup("ex", "5"), None);
        assert_eq!(db.oses.len(), 3);

        let one = db.lookup("ex", "1").unwrap();
        assert_eq!(one.cpus, Some(4));
        assert_eq!(one.memory_mib, Some(2048));
        assert_eq!(one.disk_gb, Some(1));
        assert!(one.virtio_disk && one.virtio_net);

        // ex 2 → ex 1 → ex 3 → ex 2 is a cycle; ex 2 drops virtio-net itself.
        let three = db.lookup("ex", "3").unwrap();
        assert_eq!(three.short_id.as_deref(), Some("ex3"));
        assert_eq!(three.memory_mib, Some(2048));
        assert!(three.virtio_disk);
        assert!(!three.virtio_net);
    }
}
