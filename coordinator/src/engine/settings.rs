//! Self-adjustment, governed: the evaluator's diagnosis may recommend a setting of cadence.md
//! (the warmup rounds, after a cold start). The loop applies it only inside a bound the approved
//! cadence.md sets (`max_warmup`), recording a `setting_adjusted` event; otherwise it proposes
//! the cadence.md edit for a person to approve (`ratchet approve <id>`, shown by `ratchet
//! governance`), and keeps running under the approved value. It never silently overrides an
//! approved value. (The rounds of an evaluation need no adjustment: sampling is sequential, up
//! to ethos.md's `max_rounds`.)

use protocol::events::EventKind;
use protocol::work::Recommendation;
use serde_json::json;

use super::Engine;
use crate::govern::proposals::SettingEdit;

impl Engine {
    /// Act on a recommendation: apply it within the approved bound, or propose it.
    pub(super) fn apply_recommendation(&mut self, r: &Recommendation) {
        if r.setting != "cadence.warmup" {
            return;
        }
        let current = self.warmup();
        if r.to <= current {
            return;
        }
        let bound = self.gov.cadence.max_warmup;
        if bound > current {
            let to = r.to.min(bound);
            self.st.overrides.warmup = Some(to);
            self.adjusted_this_cycle = true;
            let reason = format!("{} (within max_warmup = {bound} in the approved cadence.md)", r.reason);
            self.emit(
                None,
                None,
                EventKind::SettingAdjusted {
                    setting: r.setting.clone(),
                    from: json!(current),
                    to: json!(to),
                    reason: reason.clone(),
                },
            );
            self.say(&format!("  adjusted {} {current} -> {to}: {reason}", r.setting));
            return;
        }
        let edit = SettingEdit { key: "warmup".into(), from: current, to: r.to, reason: r.reason.clone() };
        match crate::govern::proposals::propose_setting(&self.ctx.home, &self.gov, edit) {
            Ok(Some(p)) => {
                self.adjusted_this_cycle = true;
                self.say(&format!(
                    "  governance: proposed cadence.md warmup {current} -> {} ({}); the loop keeps the approved {current} until `ratchet approve {}`",
                    r.to, r.reason, p.id
                ));
                self.emit(
                    None,
                    None,
                    EventKind::GovernanceProposed {
                        id: p.id,
                        doc: p.doc,
                        summary: p.summary,
                        evidence: json!({"recommendation": r, "max_warmup": bound}),
                    },
                );
            }
            Ok(None) => {} // proposed already against this approved text
            Err(e) => tracing::warn!("proposing cadence.md warmup {}: {e:#}", r.to),
        }
    }
}
