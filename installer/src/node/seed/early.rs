//! Seeding while the bundle is verified: apply's one read. A bundle written by `rinbundle` puts
//! the manifests and indexes its index names before every other entry, so once they have
//! streamed by (each verified) the whole seeding plan is known before the first layer: the
//! registry is asked what it lacks, what another repository holds is mounted, and each missing
//! blob is uploaded while it streams by, as the second pass would have. Only blobs go to the
//! registry this way: the registry checks each against its digest, and no manifest is pushed and
//! no tag set until `seed` runs after the whole bundle verified, so a refused bundle leaves no
//! image behind. A bundle whose layers come before its manifests (an older writer) is read again
//! after verifying, as before; so is anything that did not reach the registry now.

use super::plan::{Collect, Plan};
use super::registry::Registry;
use super::upload::Upload;
use super::{SeedOptions, absent_left_out, missing, mount_missing, send_map, site_plan};
use rin_bundle::index::{Entry, Index};
use rin_bundle::{Progress, Sink};
use std::collections::BTreeSet;
use tokio::runtime::Handle;

/// What seeding during the first pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EarlySent {
    /// Blobs uploaded (and their bytes) and mounted during the pass.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    /// (repository, blob) pairs the registry held before the pass sent anything.
    pub present: usize,
    /// Why nothing was sent during the pass, when nothing was.
    pub off: Option<String>,
    /// Why an upload failed (its blob is sent again after the pass).
    pub failure: Option<String>,
}

/// A `Sink` for the first pass that seeds as it goes (see the module's notes).
pub struct Early<'a> {
    index: &'a Index,
    opts: &'a SeedOptions,
    reg: &'a Registry<'a>,
    rt: Handle,
    progress: &'a dyn Progress,
    collect: Collect,
    /// The documents not yet seen whole.
    docs_left: BTreeSet<String>,
    phase: Phase<'a>,
    mounted: usize,
    present: usize,
    /// Which of the two took the current entry.
    took: [bool; 2],
}

enum Phase<'a> {
    Collecting,
    Uploading(Upload<'a>),
    Off(String),
}

impl<'a> Early<'a> {
    pub fn new(
        index: &'a Index,
        opts: &'a SeedOptions,
        reg: &'a Registry<'a>,
        rt: &Handle,
        progress: &'a dyn Progress,
    ) -> Self {
        let collect = Collect::new(index);
        Early {
            index,
            opts,
            reg,
            rt: rt.clone(),
            progress,
            docs_left: collect.documents().clone(),
            collect,
            phase: Phase::Collecting,
            mounted: 0,
            present: 0,
            took: [false; 2],
        }
    }

    /// Every document is in: the plan, the registry's answer, the mounts, the uploads to make.
    fn start(&mut self) -> Phase<'a> {
        let plan = match Plan::build(self.index, String::new(), &self.collect.docs) {
            Ok(p) => p,
            Err(e) => return Phase::Off(e.to_string()),
        };
        let plan = match site_plan(&plan, self.opts) {
            Ok(Some(narrowed)) => narrowed,
            Ok(None) => plan,
            Err(e) => return Phase::Off(e.to_string()),
        };
        let pairs = plan.pairs();
        let jobs = self.opts.jobs.max(1);
        let missing = match self.rt.block_on(missing(self.reg, &pairs, jobs)) {
            Ok(m) => m,
            Err(e) => return Phase::Off(e.to_string()),
        };
        if !absent_left_out(&plan, &pairs, &missing).is_empty() {
            return Phase::Off("the registry lacks blobs this delta leaves out".into());
        }
        self.present = pairs.len() - missing.len();
        let (unsent, mounted) = mount_missing(self.reg, &self.rt, &plan, &pairs, &missing, jobs);
        self.mounted = mounted;
        Phase::Uploading(Upload::new(self.reg, &self.rt, send_map(&unsent), jobs))
    }

    /// Wait for the uploads still running; what the pass sent.
    pub fn finish(self) -> EarlySent {
        let mut out = EarlySent {
            mounted: self.mounted,
            present: self.present,
            ..Default::default()
        };
        match self.phase {
            Phase::Uploading(mut u) => {
                u.finish();
                out.uploaded = u.sent.len();
                out.uploaded_bytes = u.sent.iter().sum();
                out.failure = u.failure;
            }
            Phase::Off(why) => out.off = Some(why),
            Phase::Collecting => {}
        }
        out
    }
}

impl Sink for Early<'_> {
    fn begin(&mut self, entry: &Entry) -> rin_bundle::Result<bool> {
        let collecting = self.collect.begin(entry)?;
        if matches!(self.phase, Phase::Collecting)
            && !self.docs_left.contains(&entry.path)
            && entry.path.starts_with("oci/blobs/")
        {
            self.phase = if self.docs_left.is_empty() {
                self.start()
            } else {
                Phase::Off(
                    "the bundle carries layers before its manifests (an older rinbundle wrote it)"
                        .into(),
                )
            };
            if let Phase::Off(why) = &self.phase {
                self.progress.say(&format!(
                    "seeding after the verifying pass, not during it: {why}"
                ));
            }
        }
        let uploading = match &mut self.phase {
            Phase::Uploading(u) => u.begin(entry)?,
            _ => false,
        };
        self.took = [collecting, uploading];
        Ok(collecting || uploading)
    }

    fn data(&mut self, chunk: &[u8]) -> rin_bundle::Result<()> {
        if self.took[0] {
            self.collect.data(chunk)?;
        }
        if self.took[1]
            && let Phase::Uploading(u) = &mut self.phase
        {
            u.data(chunk)?;
        }
        Ok(())
    }

    fn end(&mut self, entry: &Entry) -> rin_bundle::Result<()> {
        if self.took[0] {
            self.collect.end(entry)?;
            self.docs_left.remove(&entry.path);
        }
        if self.took[1]
            && let Phase::Uploading(u) = &mut self.phase
        {
            u.end(entry)?;
        }
        Ok(())
    }
}
