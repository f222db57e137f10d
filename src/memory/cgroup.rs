//! Where the memory limit comes from: the cgroup (v1 or v2) the process runs in,
//! host RAM, and the operator's overrides. Parsing is pure (text in, values out)
//! so every layout is tested on fixture strings; the thin I/O layer takes a root
//! path so tests can fake `/proc` and `/sys` in a temporary directory. It only
//! reports numbers: it must not size budgets, act on the limit, or read
//! anything outside `/proc` and the cgroup mounts.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Any v1 limit at or above this is the kernel's "no limit" sentinel
/// (`PAGE_COUNTER_MAX` pages, 9223372036854771712 with 4 KiB pages, a little
/// different with other page sizes); no real machine has 4 EiB of RAM.
const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Used only when neither `/proc/meminfo` nor a cgroup limit can be read
/// (e.g. not on Linux): small enough to be safe on a laptop, and the source
/// tells the operator to set the limit explicitly.
pub const FALLBACK_LIMIT_BYTES: u64 = 1 << 30;

const MIB: u64 = 1 << 20;

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The cgroup paths of the current process, as `/proc/self/cgroup` lists them
/// (relative to the root of each hierarchy as seen from its cgroup namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    pub v2: Option<String>,
    pub v1_memory: Option<String>,
}

/// One line of `/proc/self/mountinfo`, reduced to what cgroup lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the mounted filesystem that appears at `mount_point`
    /// (for cgroups: the cgroup that is the root of this view).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

/// A cgroup directory of the memory controller, with the mount point above it
/// so walks towards the root know where the visible hierarchy ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupDir {
    pub path: PathBuf,
    pub mount_point: PathBuf,
    pub version: CgroupVersion,
}

/// A value read from a cgroup limit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Bytes(u64),
}

impl Limit {
    pub fn bytes(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Bytes(bytes) => Some(bytes),
        }
    }
}

/// Limits given by the operator rather than discovered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// `--memory-limit` / `NANO_BANANA_MEMORY_LIMIT`, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// `MAX_OLD_SPACE_SIZE` from deployments of the old Node server, in MiB.
    pub max_old_space_size_mib: Option<u64>,
}

/// Why the limit is what it is, so the startup log can tell the operator which
/// knob to turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LimitSource {
    Override,
    MaxOldSpaceSize,
    CgroupV2 {
        path: PathBuf,
    },
    CgroupV1 {
        path: PathBuf,
    },
    HostRam,
    /// Nothing could be read; [`FALLBACK_LIMIT_BYTES`] is assumed.
    Unknown,
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSource::Override => f.write_str("--memory-limit / NANO_BANANA_MEMORY_LIMIT"),
            LimitSource::MaxOldSpaceSize => f.write_str(
                "MAX_OLD_SPACE_SIZE (MiB, accepted for compatibility with the Node server)",
            ),
            LimitSource::CgroupV2 { path } => write!(f, "cgroup v2 {}", path.display()),
            LimitSource::CgroupV1 { path } => write!(f, "cgroup v1 {}", path.display()),
            LimitSource::HostRam => f.write_str("host RAM (MemTotal in /proc/meminfo)"),
            LimitSource::Unknown => write!(
                f,
                "nothing readable in /proc or the cgroup mounts; assumed {} (set --memory-limit)",
                super::HumanBytes(FALLBACK_LIMIT_BYTES)
            ),
        }
    }
}

/// The memory the whole process may use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

/// Parses `/proc/self/cgroup` (`hierarchy-id:controllers:path` per line).
pub fn parse_proc_self_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end();
        if hierarchy == "0" && controllers.is_empty() {
            paths.v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.v1_memory = Some(path.to_owned());
        }
    }
    paths
}

/// Parses `/proc/self/mountinfo`; malformed lines are skipped because one odd
/// mount must not hide the cgroup mounts.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    // The kernel escapes blanks inside fields as octal, so splitting on
    // whitespace is exact.
    let mut fields = line.split_ascii_whitespace();
    let _mount_id = fields.next()?;
    let _parent_id = fields.next()?;
    let _major_minor = fields.next()?;
    let root = unescape_octal(fields.next()?);
    let mount_point = unescape_octal(fields.next()?);
    // Mount options and a variable number of optional fields precede the
    // separator.
    fields.by_ref().find(|field| *field == "-")?;
    let fs_type = unescape_octal(fields.next()?);
    let _source = fields.next();
    let super_options = fields
        .next()
        .map(|options| options.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Some(Mount {
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

/// Undoes the kernel's `\NNN` escaping (space, tab, newline, backslash).
/// Non-UTF-8 bytes are replaced: a cgroup mount with such a name is not worth
/// carrying `OsString` through every layer.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(value) = bytes.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut value: u32 = 0;
    for &digit in digits {
        if !(b'0'..=b'7').contains(&digit) {
            return None;
        }
        value = value * 8 + u32::from(digit - b'0');
    }
    u8::try_from(value).ok()
}

/// Where the memory controller's directory may be, best guess first. Pure: the
/// caller checks which candidate exists.
///
/// The cgroup path is relative to the hierarchy root of the process's cgroup
/// namespace, and the mount shows the hierarchy from `mount.root` downwards, so
/// the directory is `mount_point + (path - root)`. Inside containers that join
/// is often not visible (the container sees only its own cgroup at the mount
/// point, or the path is `/../..` because the process sits outside the
/// namespace root), so every mount point follows as a fallback.
pub fn cgroup_dir_candidates(
    mounts: &[Mount],
    paths: &CgroupPaths,
    version: CgroupVersion,
) -> Vec<CgroupDir> {
    let cgroup_path = match version {
        CgroupVersion::V2 => paths.v2.as_deref(),
        CgroupVersion::V1 => paths.v1_memory.as_deref(),
    };
    let Some(cgroup_path) = cgroup_path else {
        return Vec::new();
    };
    let matching = mounts.iter().filter(|mount| match version {
        CgroupVersion::V2 => mount.fs_type == "cgroup2",
        CgroupVersion::V1 => {
            mount.fs_type == "cgroup" && mount.super_options.iter().any(|o| o == "memory")
        }
    });

    let mut joined: Vec<(usize, CgroupDir)> = Vec::new();
    let mut mount_points: Vec<CgroupDir> = Vec::new();
    for mount in matching {
        let mount_point = PathBuf::from(&mount.mount_point);
        if let Some(relative) = relative_to_root(cgroup_path, &mount.root) {
            let depth = path_components(&mount.root).count();
            let mut path = mount_point.clone();
            path.extend(relative);
            joined.push((
                depth,
                CgroupDir {
                    path,
                    mount_point: mount_point.clone(),
                    version,
                },
            ));
        }
        mount_points.push(CgroupDir {
            path: mount_point.clone(),
            mount_point,
            version,
        });
    }
    // The mount whose root is deepest shows the most specific view.
    joined.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));

    let mut candidates: Vec<CgroupDir> = Vec::new();
    for candidate in joined.into_iter().map(|(_, dir)| dir).chain(mount_points) {
        if !candidates.iter().any(|c| c.path == candidate.path) {
            candidates.push(candidate);
        }
    }
    candidates
}

fn path_components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// `path` with `root` taken off the front, or None when `path` is not below
/// `root` or climbs out of it with `..`.
fn relative_to_root<'a>(path: &'a str, root: &str) -> Option<Vec<&'a str>> {
    let path: Vec<&str> = path_components(path).collect();
    if path.contains(&"..") {
        return None;
    }
    let root: Vec<&str> = path_components(root).collect();
    path.starts_with(&root)
        .then(|| path.get(root.len()..).unwrap_or_default().to_vec())
}

/// The first candidate directory that exists on the real filesystem.
pub fn resolve_cgroup_dir(
    mounts: &[Mount],
    paths: &CgroupPaths,
    version: CgroupVersion,
) -> Option<PathBuf> {
    resolve_cgroup_dir_at(Path::new("/"), mounts, paths, version).map(|dir| dir.path)
}

/// Like [`resolve_cgroup_dir`], with every absolute path read below `root`.
/// A candidate counts only if it has the controller's limit file: in hybrid
/// mode the v2 hierarchy exists but has no memory controller, and a v2 root
/// cgroup has no `memory.max`.
pub fn resolve_cgroup_dir_at(
    root: &Path,
    mounts: &[Mount],
    paths: &CgroupPaths,
    version: CgroupVersion,
) -> Option<CgroupDir> {
    let marker = match version {
        CgroupVersion::V2 => "memory.max",
        CgroupVersion::V1 => "memory.limit_in_bytes",
    };
    cgroup_dir_candidates(mounts, paths, version)
        .into_iter()
        .map(|dir| CgroupDir {
            path: reroot(root, &dir.path),
            mount_point: reroot(root, &dir.mount_point),
            version,
        })
        .find(|dir| dir.path.join(marker).is_file())
}

fn reroot(root: &Path, absolute: &Path) -> PathBuf {
    root.join(absolute.strip_prefix("/").unwrap_or(absolute))
}

/// Parses one cgroup limit file. None when the text is not a limit at all.
/// A v1 limit above host RAM is also effectively unlimited; that is settled
/// where host RAM is known, by taking the smaller of the two.
pub fn parse_limit_value(text: &str) -> Option<Limit> {
    let text = text.trim();
    if text == "max" || text == "-1" {
        return Some(Limit::Unlimited);
    }
    let value: u64 = text.parse().ok()?;
    Some(if value >= V1_UNLIMITED_THRESHOLD {
        Limit::Unlimited
    } else {
        Limit::Bytes(value)
    })
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(parse_kib_field)
}

/// `(VmRSS, VmHWM)` from `/proc/self/status`, in bytes.
pub fn parse_status_rss(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(parse_kib_field)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Parses `   1234 kB` as the kernel prints sizes in /proc.
fn parse_kib_field(rest: &str) -> Option<u64> {
    let mut parts = rest.split_ascii_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Parses `memory.stat` (`key value` per line); lines that are not numeric are
/// skipped.
pub fn parse_memory_stat(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Parses a size given by a person: plain bytes, or a number with a unit.
/// `k`, `M`, `G`, `T` (optionally with `B`) are powers of 1000 and `Ki`, `Mi`,
/// `Gi`, `Ti` (optionally with `B`) powers of 1024, as in Kubernetes; units are
/// case-insensitive and fractions are allowed (`1.5GiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid size {text:?}: expected bytes or a number with a unit, e.g. 1048576, 512k, \
             64M, 64Mi, 64MiB, 2G, 2GiB (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti powers of 1024)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let too_large = || format!("size {text:?} does not fit in 64 bits");
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(too_large);
    }
    let fraction: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = (fraction * multiplier as f64).round();
    // u64::MAX is not exactly representable; its f64 neighbour is 2^64.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(too_large());
    }
    Ok(bytes as u64)
}

/// Finds the limit for this process: the override if given, else the smallest
/// of the cgroup limits, host RAM and `MAX_OLD_SPACE_SIZE`.
pub fn discover(overrides: &LimitOverrides) -> MemoryLimit {
    discover_at(Path::new("/"), overrides)
}

/// [`discover`] with `/proc` and `/sys` read below `root`.
pub fn discover_at(root: &Path, overrides: &LimitOverrides) -> MemoryLimit {
    let host_ram = fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|text| parse_meminfo_total(&text));
    let cgroup = cgroup_limit_at(root);
    tracing::debug!(?host_ram, ?cgroup, ?overrides, "memory limit inputs");
    choose_limit(host_ram, cgroup, overrides)
}

/// The precedence rules, apart from any I/O.
pub fn choose_limit(
    host_ram: Option<u64>,
    cgroup: Option<(u64, LimitSource)>,
    overrides: &LimitOverrides,
) -> MemoryLimit {
    let mut limit = match host_ram {
        Some(bytes) => MemoryLimit {
            bytes,
            source: LimitSource::HostRam,
        },
        None => MemoryLimit {
            bytes: FALLBACK_LIMIT_BYTES,
            source: LimitSource::Unknown,
        },
    };
    if let Some((bytes, source)) = cgroup {
        // A cgroup limit equal to or above host RAM does not constrain
        // anything, so host RAM stays the reported source.
        if bytes < limit.bytes || limit.source == LimitSource::Unknown {
            limit = MemoryLimit { bytes, source };
        }
    }
    if let Some(mib) = overrides.max_old_space_size_mib {
        let bytes = mib.saturating_mul(MIB);
        if bytes < limit.bytes {
            limit = MemoryLimit {
                bytes,
                source: LimitSource::MaxOldSpaceSize,
            };
        }
    }
    if let Some(bytes) = overrides.memory_limit_bytes {
        if bytes > limit.bytes && limit.source != LimitSource::Unknown {
            tracing::warn!(
                requested = bytes,
                discovered = limit.bytes,
                discovered_source = %limit.source,
                "--memory-limit is above the discovered limit; the kernel may kill the process \
                 before the budget is reached"
            );
        }
        limit = MemoryLimit {
            bytes,
            source: LimitSource::Override,
        };
    }
    limit
}

/// The memory controller's directory for this process, for usage metrics.
pub fn locate() -> Option<CgroupDir> {
    locate_at(Path::new("/"))
}

/// [`locate`] with `/proc` and `/sys` read below `root`. A v1 memory line wins
/// because a controller can be bound to one hierarchy only: when it is listed
/// there (hybrid layouts), the v2 hierarchy has no memory files.
pub fn locate_at(root: &Path) -> Option<CgroupDir> {
    let (mounts, paths) = read_layout(root)?;
    [CgroupVersion::V1, CgroupVersion::V2]
        .into_iter()
        .find_map(|version| resolve_cgroup_dir_at(root, &mounts, &paths, version))
}

fn read_layout(root: &Path) -> Option<(Vec<Mount>, CgroupPaths)> {
    let cgroup = fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    Some((parse_mountinfo(&mountinfo), parse_proc_self_cgroup(&cgroup)))
}

/// The smallest cgroup limit that applies to this process, and the file that
/// set it.
fn cgroup_limit_at(root: &Path) -> Option<(u64, LimitSource)> {
    let (mounts, paths) = read_layout(root)?;
    let mut best: Option<(u64, LimitSource)> = None;
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        let Some(dir) = resolve_cgroup_dir_at(root, &mounts, &paths, version) else {
            continue;
        };
        for (bytes, path) in limits_in(&dir) {
            if best.as_ref().is_none_or(|(smallest, _)| bytes < *smallest) {
                let source = match version {
                    CgroupVersion::V1 => LimitSource::CgroupV1 { path },
                    CgroupVersion::V2 => LimitSource::CgroupV2 { path },
                };
                best = Some((bytes, source));
            }
        }
    }
    best
}

/// Every finite limit on `dir` and the cgroups above it that can be read.
fn limits_in(dir: &CgroupDir) -> Vec<(u64, PathBuf)> {
    let read_limit = |file: PathBuf| {
        let limit = fs::read_to_string(&file)
            .ok()
            .and_then(|text| parse_limit_value(&text))?
            .bytes()?;
        Some((limit, file))
    };
    let mut found = Vec::new();
    match dir.version {
        CgroupVersion::V1 => {
            // The kernel already folds every ancestor's limit, including ones
            // outside this namespace's view, into hierarchical_memory_limit.
            found.extend(read_limit(dir.path.join("memory.limit_in_bytes")));
            let stat_file = dir.path.join("memory.stat");
            let hierarchical = fs::read_to_string(&stat_file).ok().and_then(|text| {
                parse_memory_stat(&text)
                    .into_iter()
                    .find(|(key, _)| key == "hierarchical_memory_limit")
            });
            if let Some((_, value)) = hierarchical
                && let Some(bytes) = parse_limit_value(&value.to_string()).and_then(Limit::bytes)
            {
                found.push((bytes, stat_file));
            }
        }
        CgroupVersion::V2 => {
            // v2 has no folded value, so walk up to the top of the visible
            // hierarchy; the mount point itself may carry the container's limit.
            let mut current = Some(dir.path.as_path());
            while let Some(level) = current {
                found.extend(read_limit(level.join("memory.max")));
                if level == dir.mount_point || !level.starts_with(&dir.mount_point) {
                    break;
                }
                current = level.parent();
            }
        }
    }
    found
}

/// Bytes charged to the cgroup now (page cache included).
pub fn read_cgroup_memory_usage(dir: &Path, version: CgroupVersion) -> Option<u64> {
    let file = match version {
        CgroupVersion::V2 => "memory.current",
        CgroupVersion::V1 => "memory.usage_in_bytes",
    };
    fs::read_to_string(dir.join(file)).ok()?.trim().parse().ok()
}

/// The cgroup's `memory.stat`, empty when unreadable.
pub fn read_memory_stat(dir: &Path) -> Vec<(String, u64)> {
    fs::read_to_string(dir.join("memory.stat"))
        .map(|text| parse_memory_stat(&text))
        .unwrap_or_default()
}

/// `(VmRSS, VmHWM)` of this process, in bytes.
pub fn proc_self_status_rss() -> Option<(u64, u64)> {
    parse_status_rss(&fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// This machine: v1 with a nested memory cgroup, plus an empty v2 mount.
    const V1_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/4a26ec9658217762046b3bbe4c4d547a
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";
    const V1_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/root rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// Docker/Kubernetes with a private cgroup namespace on a v2 host.
    const V2_CONTAINER_CGROUP: &str = "0::/\n";
    const V2_CONTAINER_MOUNTINFO: &str = "\
1040 1039 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup \
rw,nsdelegate,memory_recursiveprot
";
    /// A systemd host on v2; optional fields before the separator.
    const V2_HOST_CGROUP: &str = "0::/user.slice/user-1000.slice/session-3.scope\n";
    const V2_HOST_MOUNTINFO: &str = "\
26 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
";
    /// Hybrid: v1 controllers, v2 mounted without controllers.
    const HYBRID_CGROUP: &str = "\
12:memory:/system.slice/app.service
1:name=systemd:/system.slice/app.service
0::/system.slice/app.service
";
    const HYBRID_MOUNTINFO: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 \
rw,nsdelegate
36 25 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup \
rw,memory
";
    /// Old Docker on v1 without a cgroup namespace: the path names the
    /// container's cgroup, the mount shows only that cgroup.
    const V1_DOCKER_CGROUP: &str = "11:memory:/docker/0123abcd\n";
    const V1_DOCKER_MOUNTINFO: &str = "\
700 690 0:40 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn proc_self_cgroup_v1_nested() {
        let paths = parse_proc_self_cgroup(V1_CGROUP);
        assert_eq!(
            paths.v1_memory.as_deref(),
            Some("/process_api/4a26ec9658217762046b3bbe4c4d547a")
        );
        assert_eq!(paths.v2.as_deref(), Some("/"));
    }

    #[test]
    fn proc_self_cgroup_v2_and_combined_controllers() {
        assert_eq!(
            parse_proc_self_cgroup(V2_HOST_CGROUP),
            CgroupPaths {
                v2: Some("/user.slice/user-1000.slice/session-3.scope".into()),
                v1_memory: None
            }
        );
        let combined = parse_proc_self_cgroup("5:cpu,memory:/a:b\ngarbage\n");
        assert_eq!(combined.v1_memory.as_deref(), Some("/a:b"));
        assert_eq!(combined.v2, None);
        // A v1 hierarchy named like a controller is not the controller.
        assert_eq!(parse_proc_self_cgroup("1:name=memory:/x\n").v1_memory, None);
    }

    #[test]
    fn mountinfo_fields_and_optional_fields() {
        let mounts = parse_mountinfo(V2_HOST_MOUNTINFO);
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[1],
            Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup".into(),
                fs_type: "cgroup2".into(),
                super_options: vec![
                    "rw".into(),
                    "nsdelegate".into(),
                    "memory_recursiveprot".into()
                ],
            }
        );
        let mounts = parse_mountinfo(V1_DOCKER_MOUNTINFO);
        assert_eq!(mounts[0].root, "/docker/0123abcd");
        assert_eq!(mounts[0].super_options, vec!["rw", "memory"]);
    }

    #[test]
    fn mountinfo_octal_escapes_and_bad_lines() {
        let text = "\
50 31 0:40 /a\\040b /mnt/my\\040cgroup\\134x rw - cgroup cg rw,memory
not a mountinfo line
51 31 0:41 / /no/separator rw
52 31 0:42 /x\\09 /y\\777 rw - cgroup cg rw,memory
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].root, "/a b");
        assert_eq!(mounts[0].mount_point, "/mnt/my cgroup\\x");
        // Invalid escapes are kept verbatim rather than guessed at.
        assert_eq!(mounts[1].root, "/x\\09");
        assert_eq!(mounts[1].mount_point, "/y\\777");
    }

    fn candidate_paths(cgroup: &str, mountinfo: &str, version: CgroupVersion) -> Vec<PathBuf> {
        cgroup_dir_candidates(
            &parse_mountinfo(mountinfo),
            &parse_proc_self_cgroup(cgroup),
            version,
        )
        .into_iter()
        .map(|dir| dir.path)
        .collect()
    }

    #[test]
    fn candidates_v1_nested_then_mount_point() {
        assert_eq!(
            candidate_paths(V1_CGROUP, V1_MOUNTINFO, CgroupVersion::V1),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/4a26ec9658217762046b3bbe4c4d547a"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        // The v2 mount here is the root cgroup: one candidate, rejected later
        // for lacking memory.max.
        assert_eq!(
            candidate_paths(V1_CGROUP, V1_MOUNTINFO, CgroupVersion::V2),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
    }

    #[test]
    fn candidates_v2_layouts() {
        assert_eq!(
            candidate_paths(
                V2_CONTAINER_CGROUP,
                V2_CONTAINER_MOUNTINFO,
                CgroupVersion::V2
            ),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
        assert_eq!(
            candidate_paths(V2_HOST_CGROUP, V2_HOST_MOUNTINFO, CgroupVersion::V2),
            vec![
                PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        assert_eq!(
            candidate_paths(V2_HOST_CGROUP, V2_HOST_MOUNTINFO, CgroupVersion::V1),
            Vec::<PathBuf>::new()
        );
        // Outside the namespace root: only the mount point is meaningful.
        assert_eq!(
            candidate_paths(
                "0::/../../system.slice\n",
                V2_CONTAINER_MOUNTINFO,
                CgroupVersion::V2
            ),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
    }

    #[test]
    fn candidates_hybrid_and_docker_v1() {
        assert_eq!(
            candidate_paths(HYBRID_CGROUP, HYBRID_MOUNTINFO, CgroupVersion::V1),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/system.slice/app.service"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        assert_eq!(
            candidate_paths(HYBRID_CGROUP, HYBRID_MOUNTINFO, CgroupVersion::V2),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified/system.slice/app.service"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ]
        );
        // Mount root equals the path: the join is the mount point, listed once.
        assert_eq!(
            candidate_paths(V1_DOCKER_CGROUP, V1_DOCKER_MOUNTINFO, CgroupVersion::V1),
            vec![PathBuf::from("/sys/fs/cgroup/memory")]
        );
        // Mount root elsewhere in the hierarchy: no join, fall back.
        assert_eq!(
            candidate_paths("11:memory:/other\n", V1_DOCKER_MOUNTINFO, CgroupVersion::V1),
            vec![PathBuf::from("/sys/fs/cgroup/memory")]
        );
    }

    #[test]
    fn limit_values() {
        assert_eq!(parse_limit_value("max\n"), Some(Limit::Unlimited));
        assert_eq!(
            parse_limit_value("9223372036854771712\n"),
            Some(Limit::Unlimited)
        );
        assert_eq!(parse_limit_value("-1"), Some(Limit::Unlimited));
        assert_eq!(
            parse_limit_value("536870912\n"),
            Some(Limit::Bytes(512 << 20))
        );
        assert_eq!(parse_limit_value("0"), Some(Limit::Bytes(0)));
        assert_eq!(parse_limit_value(""), None);
        assert_eq!(parse_limit_value("lots"), None);
    }

    #[test]
    fn meminfo_status_and_stat() {
        let meminfo = "MemTotal:       24683656 kB\nMemFree:        22581000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24683656 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);

        let status = "Name:\tx\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some((100 << 20, 200 << 20)));
        assert_eq!(parse_status_rss("VmRSS:\t1 kB\n"), None);

        let stat =
            "cache 6311936\nrss 1785856\nhierarchical_memory_limit 9223372036854771712\nbad\n";
        assert_eq!(
            parse_memory_stat(stat),
            vec![
                ("cache".to_owned(), 6311936),
                ("rss".to_owned(), 1785856),
                ("hierarchical_memory_limit".to_owned(), 9223372036854771712),
            ]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64_000_000));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("1Gi"), Ok(GIB));
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("1gib"), Ok(GIB));
        assert_eq!(parse_size("512k"), Ok(512_000));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 * GIB));
        assert_eq!(parse_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("16384Pi").map_err(|_| ()), Err(()));
        assert!(parse_size("20000000Ti").unwrap_err().contains("64 bits"));
        for bad in ["", "MiB", "-1", "1.2.3G", "12 parsecs", "1e9"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("expected bytes"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn precedence() {
        let none = LimitOverrides::default();
        let cg = |bytes| Some((bytes, LimitSource::CgroupV2 { path: "/m".into() }));

        let l = choose_limit(Some(16 * GIB), cg(2 * GIB), &none);
        assert_eq!(
            (l.bytes, l.source),
            (2 * GIB, LimitSource::CgroupV2 { path: "/m".into() })
        );

        // A cgroup limit above host RAM is host RAM in practice.
        let l = choose_limit(Some(16 * GIB), cg(64 * GIB), &none);
        assert_eq!((l.bytes, l.source), (16 * GIB, LimitSource::HostRam));

        let old = LimitOverrides {
            memory_limit_bytes: None,
            max_old_space_size_mib: Some(1024),
        };
        let l = choose_limit(Some(16 * GIB), cg(2 * GIB), &old);
        assert_eq!((l.bytes, l.source), (GIB, LimitSource::MaxOldSpaceSize));
        // It only ever lowers the limit.
        let big_old = LimitOverrides {
            memory_limit_bytes: None,
            max_old_space_size_mib: Some(8192),
        };
        assert_eq!(
            choose_limit(Some(16 * GIB), cg(2 * GIB), &big_old).bytes,
            2 * GIB
        );

        // The explicit override wins, above or below everything else.
        for bytes in [GIB / 2, 32 * GIB] {
            let explicit = LimitOverrides {
                memory_limit_bytes: Some(bytes),
                max_old_space_size_mib: Some(1024),
            };
            let l = choose_limit(Some(16 * GIB), cg(2 * GIB), &explicit);
            assert_eq!((l.bytes, l.source), (bytes, LimitSource::Override));
        }

        let l = choose_limit(None, None, &none);
        assert_eq!(
            (l.bytes, l.source),
            (FALLBACK_LIMIT_BYTES, LimitSource::Unknown)
        );
        let l = choose_limit(None, cg(8 * GIB), &none);
        assert_eq!(l.bytes, 8 * GIB);
    }

    #[test]
    fn sources_display() {
        assert_eq!(
            LimitSource::Override.to_string(),
            "--memory-limit / NANO_BANANA_MEMORY_LIMIT"
        );
        assert!(
            LimitSource::MaxOldSpaceSize
                .to_string()
                .starts_with("MAX_OLD_SPACE_SIZE")
        );
        assert_eq!(
            LimitSource::CgroupV1 {
                path: "/sys/fs/cgroup/memory/memory.stat".into()
            }
            .to_string(),
            "cgroup v1 /sys/fs/cgroup/memory/memory.stat"
        );
        assert!(LimitSource::Unknown.to_string().contains("1 GiB"));
    }

    /// A fake `/` in the temp directory, removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("memory-cgroup-test-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            FakeRoot(dir)
        }

        fn write(&self, path: &str, text: &str) -> &Self {
            let file = self.0.join(path.trim_start_matches('/'));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
            self
        }

        fn path(&self, path: &str) -> PathBuf {
            self.0.join(path.trim_start_matches('/'))
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MEMINFO_16G: &str = "MemTotal:       16777216 kB\n";

    #[test]
    fn discover_v2_takes_smallest_ancestor_limit() {
        let root = FakeRoot::new("v2-nested");
        root.write("/proc/meminfo", MEMINFO_16G)
            .write("/proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
            .write("/proc/self/mountinfo", V2_HOST_MOUNTINFO)
            .write("/sys/fs/cgroup/cgroup.procs", "")
            .write("/sys/fs/cgroup/kubepods/memory.max", "8589934592\n")
            .write("/sys/fs/cgroup/kubepods/pod1/memory.max", "1073741824\n")
            .write("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n")
            .write("/sys/fs/cgroup/kubepods/pod1/ctr/memory.current", "12345\n")
            .write(
                "/sys/fs/cgroup/kubepods/pod1/ctr/memory.stat",
                "anon 4096\nfile 8192\n",
            );
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(limit.bytes, GIB);
        assert_eq!(
            limit.source,
            LimitSource::CgroupV2 {
                path: root.path("/sys/fs/cgroup/kubepods/pod1/memory.max")
            }
        );

        let dir = locate_at(&root.0).unwrap();
        assert_eq!(dir.path, root.path("/sys/fs/cgroup/kubepods/pod1/ctr"));
        assert_eq!(dir.version, CgroupVersion::V2);
        assert_eq!(
            read_cgroup_memory_usage(&dir.path, dir.version),
            Some(12345)
        );
        assert_eq!(
            read_memory_stat(&dir.path),
            vec![("anon".to_owned(), 4096), ("file".to_owned(), 8192)]
        );
    }

    #[test]
    fn discover_v2_container_limit_on_mount_point() {
        let root = FakeRoot::new("v2-container");
        root.write("/proc/meminfo", MEMINFO_16G)
            .write("/proc/self/cgroup", V2_CONTAINER_CGROUP)
            .write("/proc/self/mountinfo", V2_CONTAINER_MOUNTINFO)
            .write("/sys/fs/cgroup/memory.max", "536870912\n");
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(limit.bytes, 512 << 20);
        assert_eq!(
            limit.source,
            LimitSource::CgroupV2 {
                path: root.path("/sys/fs/cgroup/memory.max")
            }
        );
    }

    #[test]
    fn discover_v1_hidden_path_falls_back_to_mount_point() {
        // This machine's layout, with the process's own cgroup not visible
        // under the mount and the limit set on an ancestor.
        let root = FakeRoot::new("v1-hidden");
        root.write("/proc/meminfo", MEMINFO_16G)
            .write("/proc/self/cgroup", V1_CGROUP)
            .write("/proc/self/mountinfo", V1_MOUNTINFO)
            .write(
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            )
            .write("/sys/fs/cgroup/memory/memory.usage_in_bytes", "777\n")
            .write(
                "/sys/fs/cgroup/memory/memory.stat",
                "cache 1\nhierarchical_memory_limit 2147483648\n",
            )
            .write("/sys/fs/cgroup/unified/cgroup.procs", "");
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(limit.bytes, 2 * GIB);
        assert_eq!(
            limit.source,
            LimitSource::CgroupV1 {
                path: root.path("/sys/fs/cgroup/memory/memory.stat")
            }
        );
        let dir = locate_at(&root.0).unwrap();
        assert_eq!(dir.path, root.path("/sys/fs/cgroup/memory"));
        assert_eq!(read_cgroup_memory_usage(&dir.path, dir.version), Some(777));
    }

    #[test]
    fn discover_v1_nested_visible_and_unlimited() {
        let root = FakeRoot::new("v1-nested");
        let own = "/sys/fs/cgroup/memory/process_api/4a26ec9658217762046b3bbe4c4d547a";
        root.write("/proc/meminfo", MEMINFO_16G)
            .write("/proc/self/cgroup", V1_CGROUP)
            .write("/proc/self/mountinfo", V1_MOUNTINFO)
            .write(
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            )
            .write(
                &format!("{own}/memory.limit_in_bytes"),
                "9223372036854771712\n",
            )
            .write(
                &format!("{own}/memory.stat"),
                "hierarchical_memory_limit 9223372036854771712\n",
            );
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(
            (limit.bytes, limit.source),
            (16 * GIB, LimitSource::HostRam)
        );
        assert_eq!(locate_at(&root.0).unwrap().path, root.path(own));

        // Now with a v1 limit below host RAM on the process's own cgroup.
        root.write(&format!("{own}/memory.limit_in_bytes"), "3221225472\n");
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(limit.bytes, 3 * GIB);
        assert_eq!(
            limit.source,
            LimitSource::CgroupV1 {
                path: root.path(&format!("{own}/memory.limit_in_bytes"))
            }
        );
    }

    #[test]
    fn discover_hybrid_uses_v1_memory() {
        let root = FakeRoot::new("hybrid");
        root.write("/proc/meminfo", MEMINFO_16G)
            .write("/proc/self/cgroup", HYBRID_CGROUP)
            .write("/proc/self/mountinfo", HYBRID_MOUNTINFO)
            .write(
                "/sys/fs/cgroup/unified/system.slice/app.service/cgroup.procs",
                "",
            )
            .write(
                "/sys/fs/cgroup/memory/system.slice/app.service/memory.limit_in_bytes",
                "268435456\n",
            );
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(limit.bytes, 256 << 20);
        assert!(matches!(limit.source, LimitSource::CgroupV1 { .. }));
        assert_eq!(locate_at(&root.0).unwrap().version, CgroupVersion::V1);

        let capped = LimitOverrides {
            memory_limit_bytes: None,
            max_old_space_size_mib: Some(128),
        };
        let limit = discover_at(&root.0, &capped);
        assert_eq!(
            (limit.bytes, limit.source),
            (128 << 20, LimitSource::MaxOldSpaceSize)
        );
    }

    #[test]
    fn discover_with_nothing_readable() {
        let root = FakeRoot::new("empty");
        let limit = discover_at(&root.0, &LimitOverrides::default());
        assert_eq!(
            (limit.bytes, limit.source),
            (FALLBACK_LIMIT_BYTES, LimitSource::Unknown)
        );
        assert_eq!(locate_at(&root.0), None);
        assert_eq!(read_cgroup_memory_usage(&root.0, CgroupVersion::V2), None);
        assert!(read_memory_stat(&root.0).is_empty());
    }

    #[test]
    fn discover_on_this_machine() {
        // Only sanity: the real layout differs between machines.
        let limit = discover(&LimitOverrides::default());
        assert!(limit.bytes > 0);
        let (rss, hwm) = proc_self_status_rss().unwrap();
        assert!(rss > 0 && hwm >= rss);
        eprintln!(
            "this machine: {} from {}; locate() = {:?}",
            limit.bytes,
            limit.source,
            locate()
        );
    }
}
