//! The libosinfo database (Debian package osinfo-db, `os/<vendor>/<name>.xml`),
//! read directly rather than through libosinfo: kimchid only needs to map an ISO
//! volume id to a distro and version.
//! OS profiles (recommended resources, virtio support, inheritance) for templates
//! were implemented in commit b7f4de9 and removed until templates use them.

use std::path::{Path, PathBuf};

use regex::Regex;

#[derive(Debug, Default)]
pub struct OsDb {
    /// Every `<os>`, in file path order then document order.
    oses: Vec<OsEntry>,
    /// Volume id patterns in the order `identify` tries them.
    media: Vec<Media>,
}

#[derive(Debug)]
struct OsEntry {
    distro: String,
    /// Empty for rolling releases, which have no `<version>`.
    version: String,
}

#[derive(Debug)]
struct Media {
    /// Lower sorts first: x86_64, then arch-independent media, then the rest.
    rank: u8,
    os: usize,
    pattern: Regex,
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
        // libosinfo also matches the volume size and the system, publisher and
        // application ids, which lets the database carry broad volume ids
        // ("CentOS", "1-x86_64") that match inside other distros' ids. A pattern
        // covering the whole id is more specific; anchored copies are compiled
        // only for the few that match.
        let mut best: Option<(u8, &Media)> = None;
        for media in self.media.iter().filter(|m| m.pattern.is_match(volume_id)) {
            let whole = Regex::new(&format!("^(?:{})$", media.pattern.as_str()))
                .is_ok_and(|re| re.is_match(volume_id));
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
            self.oses.push(OsEntry {
                distro: distro.to_string(),
                version: child_text(os, "version").unwrap_or_default().to_string(),
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
                    Ok(pattern) => self.media.push(Media {
                        rank,
                        os: index,
                        pattern,
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
    fn missing_dir_is_empty() {
        let db = OsDb::load(Path::new("/nonexistent/osinfo"));
        assert_eq!(db.identify("Ubuntu-Server 22.04.1 LTS amd64"), None);
    }

    /// A small hand-made database: the order `identify` tries media in, a
    /// lookahead pattern, a file that does not parse, and a `.d` directory.
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
        let os = |version: &str, body: &str| {
            format!(
                r#"<libosinfo version="0.0.1"><os id="http://example.org/ex/{version}">
                <distro>ex</distro><version>{version}</version>
                {body}</os></libosinfo>"#
            )
        };
        let files = [
            (
                "ex-1.xml",
                os(
                    "1",
                    r#"<media arch="i686"><iso><volume-id>EX DISC</volume-id></iso></media>
                    <media arch="i686"><iso><volume-id>EX LIVE 1</volume-id></iso></media>"#,
                ),
            ),
            (
                "ex-2.xml",
                os(
                    "2",
                    r#"<media arch="x86_64"><iso><volume-id>^EX DISC$</volume-id></iso></media>
                    <media arch="x86_64"><iso><volume-id>EX (?!BAD)</volume-id></iso></media>
                    <media arch="x86_64"><iso><volume-id>EX</volume-id></iso></media>"#,
                ),
            ),
            (
                "ex-3.xml",
                os(
                    "3",
                    r#"<media arch="x86_64"><iso><volume-id>EX LIVE( \d)?</volume-id>
                    <volume-size>1</volume-size></iso></media>"#,
                ),
            ),
            ("ex-4.xml", "<libosinfo><os>".to_string()),
            ("extra.d/ex-5.xml", os("5", "")),
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
        // The lookahead pattern is skipped: 5 patterns, not 6. The broken file
        // and the `.d` directory add no OS.
        assert_eq!(db.media.len(), 5);
        assert_eq!(db.oses.len(), 3);
        assert!(db.oses.iter().all(|os| os.version != "5"));
    }
}
