//! Architectures and platforms, spelled one way: an [`Arch`] is Go's name for a CPU architecture
//! (`amd64`, `arm64`, `arm`), which OCI platforms and Kubernetes' `kubernetes.io/arch` label use;
//! a [`Platform`] is `os/arch` or `os/arch/variant` (`linux/arm64`, `linux/arm/v7`). Both are
//! written as those strings wherever they are stored (the index, `images.lock`), so a value
//! read and written again is the same bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A CPU architecture, as Go (and so OCI and Kubernetes) names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arch(String);

/// The architectures K3s is released for and the builder accepts for `--arch`.
pub const KNOWN_ARCHES: &[&str] = &["amd64", "arm64", "arm", "ppc64le", "s390x", "riscv64"];

/// The one operating system K3s nodes run.
pub const LINUX: &str = "linux";

impl Arch {
    /// An architecture from [`KNOWN_ARCHES`]; the error names them.
    pub fn known(name: &str) -> Result<Arch, PlatformError> {
        if KNOWN_ARCHES.contains(&name) {
            Ok(Arch(name.to_string()))
        } else {
            Err(PlatformError::UnknownArch(name.to_string()))
        }
    }

    /// This machine's architecture (Rust's name mapped to Go's).
    pub fn host() -> Arch {
        Arch(
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "powerpc64" => "ppc64le",
                other => other,
            }
            .to_string(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `linux/<arch>`, no variant.
    pub fn linux(&self) -> Platform {
        Platform {
            os: LINUX.to_string(),
            arch: self.clone(),
            variant: None,
        }
    }

    /// The variant a platform of this architecture means when it names none (containerd's
    /// rule: `arm64` is `v8`, `arm` is `v7`, `amd64` is `v1`).
    fn default_variant(&self) -> Option<&'static str> {
        match self.0.as_str() {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            "amd64" => Some("v1"),
            _ => None,
        }
    }
}

/// A platform: operating system, architecture, and an optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    arch: Arch,
    variant: Option<String>,
}

impl Platform {
    /// From the fields of an OCI descriptor or image config; None when os or architecture is
    /// empty or not a single path component.
    pub fn from_parts(os: &str, arch: &str, variant: Option<&str>) -> Option<Platform> {
        let variant = variant.filter(|v| !v.is_empty());
        Some(Platform {
            os: component(os).ok()?.to_string(),
            arch: arch.parse().ok()?,
            variant: match variant {
                Some(v) => Some(component(v).ok()?.to_string()),
                None => None,
            },
        })
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    pub fn is_linux(&self) -> bool {
        self.os == LINUX
    }

    /// The same operating system and architecture, whatever the variants.
    pub fn same_arch(&self, other: &Platform) -> bool {
        self.os == other.os && self.arch == other.arch
    }

    /// Whether any of `wanted` [`matches`](Platform::matches) this platform.
    pub fn matches_any<'a>(&self, wanted: impl IntoIterator<Item = &'a Platform>) -> bool {
        wanted.into_iter().any(|w| w.matches(self))
    }

    /// The same platform once a missing variant reads as the architecture's default:
    /// `linux/arm64` matches `linux/arm64/v8`, `linux/arm` matches `linux/arm/v7` but not
    /// `linux/arm/v6`.
    pub fn matches(&self, other: &Platform) -> bool {
        fn variant(p: &Platform) -> Option<&str> {
            p.variant.as_deref().or(p.arch.default_variant())
        }
        self.same_arch(other) && variant(self) == variant(other)
    }
}

/// `a, b, c`: how messages list platforms.
pub fn list<'a>(platforms: impl IntoIterator<Item = &'a Platform>) -> String {
    platforms
        .into_iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("unknown architecture {0:?}; use one of {list}", list = KNOWN_ARCHES.join(", "))]
    UnknownArch(String),
    #[error(
        "{0:?} is not a platform: write ARCH, OS/ARCH or OS/ARCH/VARIANT (e.g. arm64, linux/arm64, linux/arm/v7)"
    )]
    Malformed(String),
}

/// A non-empty path component of lowercase letters, digits, `_`, `.` and `-`.
fn component(s: &str) -> Result<&str, ()> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok { Ok(s) } else { Err(()) }
}

impl FromStr for Arch {
    type Err = PlatformError;

    /// Any well-formed architecture name; [`Arch::known`] also checks it is one K3s supports.
    fn from_str(s: &str) -> Result<Arch, PlatformError> {
        component(s)
            .map(|s| Arch(s.to_string()))
            .map_err(|()| PlatformError::Malformed(s.to_string()))
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `ARCH` (meaning `linux/ARCH`), `OS/ARCH` or `OS/ARCH/VARIANT`.
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError::Malformed(s.to_string());
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts[..] {
            [arch] => (LINUX, arch, None),
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant)),
            _ => return Err(bad()),
        };
        if variant == Some("") {
            return Err(bad());
        }
        Platform::from_parts(os, arch, variant).ok_or_else(bad)
    }
}

/// A platform equals its written form (`linux/arm64/v8`), which is not the same as matching it.
impl PartialEq<str> for Platform {
    fn eq(&self, other: &str) -> bool {
        let mut parts = other.split('/');
        parts.next() == Some(self.os.as_str())
            && parts.next() == Some(self.arch.as_str())
            && parts.next() == self.variant.as_deref()
            && parts.next().is_none()
    }
}

impl PartialEq<&str> for Platform {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            Some(v) => f.pad(&format!("{}/{}/{v}", self.os, self.arch)),
            None => f.pad(&format!("{}/{}", self.os, self.arch)),
        }
    }
}

/// Platforms sort as their strings do, so sorted lists in the index and the lock keep the
/// order they had as strings.
impl Ord for Platform {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for Platform {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read as written: a stored platform must be `OS/ARCH[/VARIANT]` (the short `ARCH` form is
/// for command lines only).
impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<Platform>() {
            Ok(p) if p.to_string() == s => Ok(p),
            _ => Err(serde::de::Error::custom(PlatformError::Malformed(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_three_spellings_and_writes_them_back() {
        assert_eq!(p("arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        let v7 = p("linux/arm/v7");
        assert_eq!(
            (v7.os(), v7.arch().as_str(), v7.variant()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!(v7.to_string(), "linux/arm/v7");
        for bad in [
            "",
            "/",
            "linux/",
            "linux//v7",
            "linux/arm/",
            "linux/arm/v7/x",
            "Linux/amd64",
            "a b",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_missing_variant_matches_the_default_one_only() {
        assert!(p("arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm64").matches(&p("linux/amd64")));
        assert!(!p("linux/riscv64").matches(&p("linux/riscv64/rva22")));
        assert!(p("linux/arm").same_arch(&p("linux/arm/v6")));
        assert!(!p("linux/arm").same_arch(&p("linux/arm64")));
    }

    #[test]
    fn known_architectures_only_where_asked() {
        assert_eq!(Arch::known("arm64").unwrap().linux(), p("linux/arm64"));
        let e = Arch::known("mips").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown architecture \"mips\"; use one of amd64, arm64, arm, ppc64le, s390x, riscv64"
        );
        assert!("mips".parse::<Arch>().is_ok());
    }

    #[test]
    fn stored_form_round_trips_and_sorts_as_strings() {
        let list: Vec<Platform> =
            serde_json::from_str(r#"["linux/arm","linux/arm/v7","linux/arm64/v8"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"["linux/arm","linux/arm/v7","linux/arm64/v8"]"#
        );
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(sorted, list);
        assert!(serde_json::from_str::<Platform>(r#""arm64""#).is_err());
        assert!(list[1] == "linux/arm/v7" && list[1] != "linux/arm" && list[0] != "arm");
        assert_eq!(
            super::list(&list),
            "linux/arm, linux/arm/v7, linux/arm64/v8"
        );
    }
}
