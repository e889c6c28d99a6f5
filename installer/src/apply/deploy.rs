//! Step 6 of apply: the cluster step, from the first server: the stack's objects applied,
//! waited for, pruned and recorded (`rollout::roll_out`); in a dry run, the list of what would
//! be applied.

use super::Run;
use super::registry::Site;
use crate::cluster::connect::connect;
use crate::cluster::rollout::{self, Desired};
use crate::cluster::stack;
use crate::error::Result;
use crate::node::stage::Staged;
use crate::release::Release;

impl Run<'_> {
    /// Step 6: deploy (the first server, when K3s was started here or `--kubeconfig` names a
    /// running cluster).
    pub(super) fn deploy(&mut self, staged: &Staged, site: Site) -> Result<()> {
        let opts = &self.opts;
        let index = &self.index;
        match opts.deploys_here() {
            _ if opts.dry_run && opts.plans() => {
                let objs = rollout::plan(stack::objects(
                    index,
                    &staged.kept,
                    site.yaml.as_deref(),
                    opts.seed.platforms.as_ref(),
                    true,
                )?)?;
                self.done.plan = objs
                    .iter()
                    .map(|o| match o.generated() {
                        Some(how) => format!(
                            "{} (from {}; created when missing, {how})",
                            o.reference, o.source
                        ),
                        None => format!("{} (from {})", o.reference, o.source),
                    })
                    .collect();
                if let Some(why) = opts.deploys_here() {
                    self.report.say(&format!("deploy skipped: {why}"));
                    self.done.plan_deferred = Some(why);
                }
            }
            Some(why) => self.report.say(&format!("deploy skipped: {why}")),
            // A dry run stops above: the first server plans, any other node deploys nothing.
            None => {
                let c = match site.cluster {
                    Some(c) => c,
                    None => connect(&opts.kubeconfig_path(), opts.timeout, self.rt, self.report)?.0,
                };
                let objs = stack::objects(
                    index,
                    &staged.kept,
                    site.yaml.as_deref(),
                    opts.seed.platforms.as_ref(),
                    false,
                )?;
                let desired = Desired {
                    release: Release {
                        stack: index.stack.name.clone(),
                        version: index.stack.version.clone(),
                        k3s: index.k3s.as_ref().map(|k| k.version.clone()),
                        index_sha256: self.index_sha256.clone(),
                        images: stack::images(index),
                        installed: rin_bundle::index::format_created(rin_bundle::index::now_epoch()),
                        ..Default::default()
                    },
                    objects: objs,
                };
                let out = self.rt.block_on(rollout::roll_out(
                    &c,
                    desired,
                    &opts.rollout(),
                    self.report,
                ))?;
                if let Some(state) = &self.state {
                    state.keep_objects(&out.record, &out.objects)?;
                    state.forget_objects_except(&out.kept_revisions)?;
                }
                self.done.rolled_out = Some(out);
            }
        }
        Ok(())
    }
}
