//! Operating system packages for the host step, Debian's kind: a repository's `Packages` index
//! read into the candidates of one architecture ([`Repository`]), the requested packages
//! resolved with the dependencies a minimal install lacks ([`Repository::resolve`]), and the
//! node's dpkg database ([`Have::from_status`]) asked whether a set of packages can be installed
//! without anything else ([`unmet`]).
//!
//! Parsing is the `debian-control` crate's (deb822 paragraphs, relation fields) and version
//! order `debversion`'s (dpkg's algorithm); what is here is the choosing.

use debian_control::lossy::{Relation, Relations};
use debian_control::relations::VersionConstraint;
use debversion::Version;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the package index is not readable: {0}")]
    Index(String),
    #[error("{name}: version {version:?} is not a Debian version: {reason}")]
    Version {
        name: String,
        version: String,
        reason: String,
    },
    #[error("{name}: its {field} field is not a relation list: {reason}")]
    Field {
        name: String,
        field: &'static str,
        reason: String,
    },
    #[error("the repository's Release file is not readable: {0}")]
    Release(String),
    #[error("no package {wanted} in the repository for {arch}")]
    NotFound { wanted: String, arch: String },
    #[error("{package} depends on `{clause}`, which the repository does not have for {arch}")]
    Unsatisfiable {
        package: String,
        clause: String,
        arch: String,
    },
    #[error("{package} needs `{clause}`, but {chosen} {version} is chosen already")]
    Conflict {
        package: String,
        clause: String,
        chosen: String,
        version: String,
    },
}

/// One package of a repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: String,
    /// `arm64`, `all`, ...
    pub architecture: String,
    /// Relative to the repository's root.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    /// `Essential: yes` or `Priority: required`: on every installed system, never carried
    /// unless asked for by name.
    pub base: bool,
}

/// A package asked for: `name` or `name=version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub name: String,
    pub version: Option<String>,
}

impl std::str::FromStr for Request {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, version) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (s, None),
        };
        let ok_name = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !ok_name {
            return Err(format!(
                "{s:?} is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`), \
                 optionally `=VERSION`"
            ));
        }
        if let Some(v) = &version
            && let Err(e) = v.parse::<Version>()
        {
            return Err(format!("{s:?}: {v:?} is not a Debian version: {e}"));
        }
        Ok(Request {
            name: name.to_string(),
            version,
        })
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What resolution chose: each package, whether the stack named it, and the chosen packages
/// its dependencies are met by (so a subset of the requests can be carried with exactly what
/// it needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub candidate: Candidate,
    pub requested: bool,
    pub needs: BTreeSet<String>,
}

/// What a node has installed (dpkg's database): each package's version, what it provides
/// and what it depends on.
#[derive(Debug, Default, Clone)]
pub struct Have {
    pkgs: BTreeMap<String, Installed>,
}

#[derive(Debug, Clone)]
struct Installed {
    version: Version,
    provides: Vec<Provided>,
    /// `Pre-Depends` and `Depends`, joined.
    depends: String,
}

#[derive(Debug, Clone)]
struct Provided {
    name: String,
    version: Option<Version>,
}

fn parse_version(name: &str, v: &str) -> Result<Version, Error> {
    v.parse()
        .map_err(|e: debversion::ParseError| Error::Version {
            name: name.into(),
            version: v.into(),
            reason: e.to_string(),
        })
}

fn parse_relations(name: &str, field: &'static str, text: &str) -> Result<Relations, Error> {
    text.parse().map_err(|reason| Error::Field {
        name: name.into(),
        field,
        reason,
    })
}

fn parse_provides(name: &str, text: &str) -> Result<Vec<Provided>, Error> {
    let rels = parse_relations(name, "Provides", text)?;
    Ok(rels
        .0
        .into_iter()
        .flatten()
        .map(|r| Provided {
            name: r.name,
            version: r
                .version
                .and_then(|(c, v)| (c == VersionConstraint::Equal).then_some(v)),
        })
        .collect())
}

fn version_ok(have: &Version, rel: &Relation) -> bool {
    match &rel.version {
        None => true,
        Some((c, v)) => match c {
            VersionConstraint::GreaterThanEqual => have >= v,
            VersionConstraint::LessThanEqual => have <= v,
            VersionConstraint::Equal => have == v,
            VersionConstraint::GreaterThan => have > v,
            VersionConstraint::LessThan => have < v,
        },
    }
}

/// Does a package `name` at `version` providing `provides` meet `rel`? A versioned relation
/// is met by a virtual package only when it is provided with a version.
fn meets(name: &str, version: &Version, provides: &[Provided], rel: &Relation) -> bool {
    (name == rel.name && version_ok(version, rel))
        || provides.iter().any(|p| {
            p.name == rel.name
                && match (&rel.version, &p.version) {
                    (None, _) => true,
                    (Some(_), Some(v)) => version_ok(v, rel),
                    (Some(_), None) => false,
                }
        })
}

impl Have {
    /// The packages dpkg's database (`/var/lib/dpkg/status`) records as installed.
    pub fn from_status(r: impl BufRead) -> Result<Self, Error> {
        let mut have = Have::default();
        for p in deb822_fast::Deb822::iter_paragraphs_from_reader(r) {
            let p = p.map_err(|e| Error::Index(e.to_string()))?;
            let (Some(name), Some(status), Some(version)) =
                (p.get("Package"), p.get("Status"), p.get("Version"))
            else {
                continue;
            };
            if status.split_whitespace().last() != Some("installed") {
                continue;
            }
            let f = |n: &str| p.get(n).unwrap_or("").trim().to_string();
            have.add(&Package {
                name,
                version,
                depends: &f("Depends"),
                pre_depends: &f("Pre-Depends"),
                provides: &f("Provides"),
                requested: false,
            })?;
        }
        Ok(have)
    }

    /// Add a package (replacing one of the same name).
    pub fn add(&mut self, p: &Package<'_>) -> Result<(), Error> {
        let version = parse_version(p.name, p.version)?;
        let provides = parse_provides(p.name, p.provides)?;
        let depends = [p.pre_depends, p.depends]
            .iter()
            .filter(|d| !d.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        self.pkgs.insert(
            p.name.to_string(),
            Installed {
                version,
                provides,
                depends,
            },
        );
        Ok(())
    }

    /// The version of `name` installed, if it is.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.pkgs.get(name).map(|i| &i.version)
    }

    fn meets(&self, rel: &Relation) -> bool {
        self.pkgs
            .iter()
            .any(|(name, i)| meets(name, &i.version, &i.provides, rel))
    }
}

/// A package of a set the site may install (its list's fields).
#[derive(Debug, Clone, Copy)]
pub struct Package<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub depends: &'a str,
    pub pre_depends: &'a str,
    pub provides: &'a str,
    /// Named by the stack: it must end up installed.
    pub requested: bool,
}

impl Package<'_> {
    fn clauses(&self) -> Result<Vec<Vec<Relation>>, Error> {
        let mut out = parse_relations(self.name, "Pre-Depends", self.pre_depends)?.0;
        out.extend(parse_relations(self.name, "Depends", self.depends)?.0);
        Ok(out)
    }
}

/// What of a set to install on a node, changing as little as it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// Indexes into the set, in order.
    pub install: Vec<usize>,
    /// Dependencies nothing meets (`A needs B (>= 2)`), and installed packages an upgrade would
    /// break (`upgrading B to 3 breaks C, which needs B (<< 3)`): empty when `dpkg -i` of
    /// `install` can succeed.
    pub unmet: Vec<String>,
}

/// Plan the install of `set` onto a node that has `have`: each requested package the node lacks
/// (any installed version counts: the node's own packages are its own), then each dependency of
/// those that the node does not meet, from the set (a package the node has older is upgraded
/// only when a dependency asks for the newer one). What nothing meets is `unmet`, as is an
/// upgrade that would break a package the node has.
pub fn plan(set: &[Package<'_>], have: &Have) -> Result<Install, Error> {
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let mut work = Vec::new();
    for (i, p) in set.iter().enumerate() {
        if p.requested && have.version(p.name).is_none() && chosen.insert(i) {
            work.push(i);
        }
    }
    // The node as it will be: what it has, with the chosen packages over it.
    let mut a = have.clone();
    for &i in &chosen {
        a.add(&set[i])?;
    }
    let mut unmet = Vec::new();
    while let Some(i) = work.pop() {
        for clause in set[i].clauses()? {
            if clause.iter().any(|r| a.meets(r)) {
                continue;
            }
            let found = clause.iter().find_map(|r| {
                set.iter().enumerate().find_map(|(j, q)| {
                    let v = parse_version(q.name, q.version).ok()?;
                    let provides = parse_provides(q.name, q.provides).ok()?;
                    meets(q.name, &v, &provides, r).then_some(j)
                })
            });
            match found {
                Some(j) => {
                    if chosen.insert(j) {
                        a.add(&set[j])?;
                        work.push(j);
                    }
                }
                None => unmet.push(format!("{} needs {}", set[i].name, clause_text(&clause))),
            }
        }
    }
    // Checked again on the final state: each installed package's dependencies, and every
    // package the node keeps that depends on one being upgraded.
    for &i in &chosen {
        for clause in set[i].clauses()? {
            let text = format!("{} needs {}", set[i].name, clause_text(&clause));
            if !clause.iter().any(|r| a.meets(r)) && !unmet.contains(&text) {
                unmet.push(text);
            }
        }
    }
    let replaced: BTreeSet<&str> = chosen.iter().map(|&i| set[i].name).collect();
    for (name, inst) in &have.pkgs {
        if replaced.contains(name.as_str()) || inst.depends.is_empty() {
            continue;
        }
        for clause in parse_relations(name, "Depends", &inst.depends)?.0 {
            if clause.iter().any(|r| replaced.contains(r.name.as_str()))
                && !clause.iter().any(|r| a.meets(r))
            {
                unmet.push(format!(
                    "the upgrade breaks {name} {}, which needs {}",
                    inst.version,
                    clause_text(&clause)
                ));
            }
        }
    }
    Ok(Install {
        install: chosen.into_iter().collect(),
        unmet,
    })
}

fn clause_text(clause: &[Relation]) -> String {
    clause
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A repository's `Release` file (the text its `InRelease` signs): the sha256 and size of each
/// index it lists, by path relative to the file's directory (`main/binary-arm64/Packages.gz`).
#[derive(Debug, PartialEq, Eq)]
pub struct Release {
    pub sha256: BTreeMap<String, (String, u64)>,
    /// The `Valid-Until` field as written (`Sat, 12 Dec 2026 03:33:28 UTC`), when there is one.
    pub valid_until: Option<String>,
}

impl Release {
    /// Parse the `SHA256` field (`HASH SIZE PATH` per line) of a Release file.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::Release(why);
        let mut paragraphs = deb822_fast::Deb822::iter_paragraphs_from_reader(text.as_bytes());
        let p = paragraphs
            .next()
            .ok_or_else(|| bad("it is empty".into()))?
            .map_err(|e| bad(e.to_string()))?;
        let field = p
            .get("SHA256")
            .ok_or_else(|| bad("it has no SHA256 field".into()))?;
        let mut sha256 = BTreeMap::new();
        for line in field.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [hash, size, path] = parts[..] else {
                return Err(bad(format!("SHA256 line {line:?} is not `HASH SIZE PATH`")));
            };
            let size = size
                .parse()
                .map_err(|_| bad(format!("SHA256 line {line:?}: {size:?} is not a size")))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("SHA256 line {line:?}: not a sha256")));
            }
            sha256.insert(path.to_string(), (hash.to_ascii_lowercase(), size));
        }
        Ok(Release {
            sha256,
            valid_until: p.get("Valid-Until").map(|v| v.trim().to_string()),
        })
    }
}

/// A repository's packages for one architecture (and `all`).
#[derive(Debug)]
pub struct Repository {
    arch: String,
    candidates: Vec<(Candidate, Version, Vec<Provided>)>,
    by_name: HashMap<String, Vec<usize>>,
    providers: HashMap<String, Vec<usize>>,
}

impl Repository {
    /// Read a `Packages` index (decompressed), keeping the packages of `arch` (Debian's name)
    /// and `all`. Only the fields resolution and carrying need are kept.
    pub fn read(r: impl BufRead, arch: &str) -> Result<Self, Error> {
        let mut repo = Repository {
            arch: arch.to_string(),
            candidates: Vec::new(),
            by_name: HashMap::new(),
            providers: HashMap::new(),
        };
        for p in deb822_fast::Deb822::iter_paragraphs_from_reader(r) {
            let p = p.map_err(|e| Error::Index(e.to_string()))?;
            let field = |f: &str| p.get(f).unwrap_or("").trim().to_string();
            let name = field("Package");
            let a = field("Architecture");
            if name.is_empty() || (a != arch && a != "all") {
                continue;
            }
            let (filename, sha256) = (field("Filename"), field("SHA256"));
            if filename.is_empty() || sha256.len() != 64 {
                return Err(Error::Index(format!(
                    "{name} has no Filename or SHA256 field"
                )));
            }
            let size = field("Size")
                .parse()
                .map_err(|_| Error::Index(format!("{name} has no valid Size field")))?;
            let c = Candidate {
                version: field("Version"),
                architecture: a,
                filename,
                size,
                sha256,
                depends: field("Depends"),
                pre_depends: field("Pre-Depends"),
                provides: field("Provides"),
                base: field("Essential") == "yes" || field("Priority") == "required",
                name,
            };
            repo.add(c)?;
        }
        repo.close_base();
        Ok(repo)
    }

    fn add(&mut self, c: Candidate) -> Result<(), Error> {
        let v = parse_version(&c.name, &c.version)?;
        let provides = parse_provides(&c.name, &c.provides)?;
        let i = self.candidates.len();
        self.by_name.entry(c.name.clone()).or_default().push(i);
        for p in &provides {
            self.providers.entry(p.name.clone()).or_default().push(i);
        }
        self.candidates.push((c, v, provides));
        Ok(())
    }

    /// How many packages were kept.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    fn meets(&self, i: usize, rel: &Relation) -> bool {
        let (c, v, p) = &self.candidates[i];
        meets(&c.name, v, p, rel)
    }

    /// The package named by `rel` to take: the `prefer`red version when it meets `rel`, else
    /// the newest that does.
    fn named(&self, rel: &Relation, prefer: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
        let real: Vec<usize> = self
            .by_name
            .get(&rel.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.meets(i, rel))
            .collect();
        if let Some(p) = prefer(&rel.name)
            && let Some(&i) = real.iter().find(|&&i| self.candidates[i].0.version == p)
        {
            return Some(i);
        }
        real.into_iter().max_by(|&a, &b| {
            self.candidates[a]
                .1
                .cmp(&self.candidates[b].1)
                .then(b.cmp(&a))
        })
    }

    /// The candidate to take for `rel`: a package of that name ([`Self::named`]), else the first
    /// provider by name.
    fn pick(&self, rel: &Relation, prefer: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
        if let Some(i) = self.named(rel, prefer) {
            return Some(i);
        }
        self.providers
            .get(&rel.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.meets(i, rel))
            .min_by(|&a, &b| {
                let (ca, va, _) = &self.candidates[a];
                let (cb, vb, _) = &self.candidates[b];
                ca.name.cmp(&cb.name).then(vb.cmp(va))
            })
    }

    /// Is `rel` met by a package every installed system has?
    fn base_meets(&self, rel: &Relation) -> bool {
        self.by_name
            .get(&rel.name)
            .into_iter()
            .chain(self.providers.get(&rel.name))
            .flatten()
            .any(|&i| self.candidates[i].0.base && self.meets(i, rel))
    }

    /// Does `rel` ask for exactly the version the repository has now (`= V`, `>= V`)? A node
    /// of the release may have an older one (its packages lag behind the repository's point
    /// releases), so such a dependency is carried even when a minimal install has the package:
    /// `udev` needs `libudev1 (= its own version)`.
    fn pins_current(&self, rel: &Relation) -> bool {
        let Some((c, v)) = &rel.version else {
            return false;
        };
        matches!(
            c,
            VersionConstraint::Equal | VersionConstraint::GreaterThanEqual
        ) && self
            .by_name
            .get(&rel.name)
            .into_iter()
            .flatten()
            .any(|&i| self.candidates[i].1 == *v)
    }

    /// A minimal install is more than the packages marked essential or required: it holds what
    /// they depend on too (`libc6` has no priority of its own in Debian's index). Mark that
    /// closure `base`.
    fn close_base(&mut self) {
        let seeds: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| self.candidates[i].0.base)
            .collect();
        let mut base: BTreeSet<usize> = seeds.iter().copied().collect();
        let mut work: Vec<usize> = seeds;
        while let Some(i) = work.pop() {
            let c = &self.candidates[i].0;
            let text = format!("{}, {}", c.pre_depends, c.depends);
            let Ok(rels) = text.parse::<Relations>() else {
                continue;
            };
            for clause in rels.0 {
                if clause
                    .iter()
                    .any(|r| base.iter().any(|&j| self.meets(j, r)))
                {
                    continue;
                }
                if let Some(j) = clause.iter().find_map(|r| self.pick(r, &|_| None))
                    && base.insert(j)
                {
                    work.push(j);
                }
            }
        }
        for i in base {
            self.candidates[i].0.base = true;
        }
    }

    /// The requested packages and, transitively, the packages their `Pre-Depends` and
    /// `Depends` need that a minimal install (`Essential: yes`, `Priority: required`) lacks, or
    /// has but may have older than they need (a dependency on the repository's exact version);
    /// sorted by name. Of alternatives (`a | b`), one already chosen or met by the minimal
    /// install wins, else the first the repository has. `prefer` gives a version to keep when it
    /// still fits (the lock's). `Recommends` are not followed.
    pub fn resolve(
        &self,
        requests: &[Request],
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Resolved>, Error> {
        let mut chosen: BTreeMap<String, (usize, bool, BTreeSet<String>)> = BTreeMap::new();
        let mut work = std::collections::VecDeque::new();
        for r in requests {
            let rel = Relation {
                name: r.name.clone(),
                version: match &r.version {
                    Some(v) => Some((VersionConstraint::Equal, parse_version(&r.name, v)?)),
                    None => None,
                },
                ..Relation::new()
            };
            let i = self.named(&rel, prefer).ok_or_else(|| Error::NotFound {
                wanted: r.to_string(),
                arch: self.arch.clone(),
            })?;
            match chosen.get_mut(&r.name) {
                Some((j, requested, _)) if *j == i => *requested = true,
                Some((j, _, _)) => {
                    return Err(Error::Conflict {
                        package: r.name.clone(),
                        clause: r.to_string(),
                        chosen: r.name.clone(),
                        version: self.candidates[*j].0.version.clone(),
                    });
                }
                None => {
                    chosen.insert(r.name.clone(), (i, true, BTreeSet::new()));
                    work.push_back(r.name.clone());
                }
            }
        }
        while let Some(name) = work.pop_front() {
            let i = chosen[&name].0;
            let c = &self.candidates[i].0;
            let mut needs = BTreeSet::new();
            for (field, text) in [("Pre-Depends", &c.pre_depends), ("Depends", &c.depends)] {
                for clause in parse_relations(&c.name, field, text)?.0 {
                    if let Some(by) = clause.iter().find_map(|r| {
                        chosen
                            .iter()
                            .find(|(_, (j, _, _))| self.meets(*j, r))
                            .map(|(n, _)| n.clone())
                    }) {
                        needs.insert(by);
                        continue;
                    }
                    if clause
                        .iter()
                        .any(|r| self.base_meets(r) && !self.pins_current(r))
                    {
                        continue;
                    }
                    let Some(j) = clause.iter().find_map(|r| self.pick(r, prefer)) else {
                        return Err(Error::Unsatisfiable {
                            package: c.name.clone(),
                            clause: clause_text(&clause),
                            arch: self.arch.clone(),
                        });
                    };
                    let picked = &self.candidates[j].0;
                    if let Some((k, _, _)) = chosen.get(&picked.name) {
                        return Err(Error::Conflict {
                            package: c.name.clone(),
                            clause: clause_text(&clause),
                            chosen: picked.name.clone(),
                            version: self.candidates[*k].0.version.clone(),
                        });
                    }
                    chosen.insert(picked.name.clone(), (j, false, BTreeSet::new()));
                    needs.insert(picked.name.clone());
                    work.push_back(picked.name.clone());
                }
            }
            needs.remove(&name);
            if let Some(entry) = chosen.get_mut(&name) {
                entry.2 = needs;
            }
        }
        Ok(chosen
            .into_values()
            .map(|(i, requested, needs)| Resolved {
                candidate: self.candidates[i].0.clone(),
                requested,
                needs,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
