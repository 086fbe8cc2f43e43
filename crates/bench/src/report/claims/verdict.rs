//! What the numbers say about a claim or a goal, as data, and the one place where it
//! becomes Markdown: the label of every decisive outcome in bold, the undecided ones
//! (incomplete, not measured) plain.

/// The outcome of one judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A claim the numbers bear out.
    Confirmed,
    /// A claim the numbers contradict.
    Refuted,
    /// A claim whose effect did not show at all.
    NotSeen,
    /// A claim whose effect showed, but by less than its threshold.
    NotClearlySeen,
    /// A goal reached.
    Met,
    /// A goal not reached.
    Missed,
    /// A goal the numbers reach, but against a figure that is itself only a bound.
    NotEstablished,
    /// Some of the cells it needs ran, not all.
    Incomplete,
    /// None of the cells it needs ran.
    NotMeasured,
}

impl Outcome {
    /// The label in the tables: claims capitalised, goals not, as their columns read.
    fn label(self) -> &'static str {
        match self {
            Outcome::Confirmed => "Confirmed",
            Outcome::Refuted => "Refuted",
            Outcome::NotSeen => "Not seen",
            Outcome::NotClearlySeen => "Not clearly seen",
            Outcome::Met => "met",
            Outcome::Missed => "missed",
            Outcome::NotEstablished => "not established",
            Outcome::Incomplete => "incomplete",
            Outcome::NotMeasured => "not measured",
        }
    }

    /// Whether the numbers decided it (and the label is set in bold).
    fn decided(self) -> bool {
        !matches!(self, Outcome::Incomplete | Outcome::NotMeasured)
    }
}

/// One judgement: `**Confirmed** for reactor: why`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What was found.
    pub outcome: Outcome,
    /// For whom or on what it holds (`for throughput`, `on 2 of 13`), after the label.
    pub scope: Option<String>,
    /// Why, after a colon.
    pub reason: Option<String>,
}

impl Verdict {
    /// The bare outcome.
    pub fn new(outcome: Outcome) -> Verdict {
        Verdict { outcome, scope: None, reason: None }
    }

    /// The outcome with why.
    pub fn because(outcome: Outcome, reason: impl Into<String>) -> Verdict {
        Verdict::new(outcome).and_because(reason)
    }

    /// The outcome for whom or on what it holds.
    pub fn scoped(outcome: Outcome, scope: impl Into<String>) -> Verdict {
        Verdict { scope: Some(scope.into()), ..Verdict::new(outcome) }
    }

    /// Met or missed, as `met` says.
    pub fn met_if(met: bool) -> Verdict {
        Verdict::new(if met { Outcome::Met } else { Outcome::Missed })
    }

    /// This verdict with why.
    pub fn and_because(self, reason: impl Into<String>) -> Verdict {
        Verdict { reason: Some(reason.into()), ..self }
    }

    /// Its Markdown: the label (bold when decided), the scope, a colon and the reason.
    pub fn markdown(&self) -> String {
        let label = self.outcome.label();
        let mut out = if self.outcome.decided() { format!("**{label}**") } else { label.to_string() };
        if let Some(s) = &self.scope {
            out.push(' ');
            out.push_str(s);
        }
        if let Some(r) = &self.reason {
            out.push_str(": ");
            out.push_str(r);
        }
        out
    }
}

/// Several verdicts on the parts of one claim, then remarks that are numbers rather than
/// verdicts, in one cell.
pub fn markdown(verdicts: &[Verdict], remarks: &[String]) -> String {
    verdicts.iter().map(Verdict::markdown).chain(remarks.iter().cloned()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decided_outcomes_are_bold_and_undecided_ones_plain() {
        assert_eq!(Verdict::new(Outcome::Met).markdown(), "**met**");
        assert_eq!(Verdict::new(Outcome::NotMeasured).markdown(), "not measured");
        assert_eq!(Verdict::because(Outcome::Incomplete, "poll only").markdown(), "incomplete: poll only");
        assert_eq!(Verdict::met_if(false).markdown(), "**missed**");
    }

    #[test]
    fn the_scope_follows_the_label_and_the_reason_a_colon() {
        let v = Verdict::scoped(Outcome::NotSeen, "here (0.92×)").and_because("one core either way");
        assert_eq!(v.markdown(), "**Not seen** here (0.92×): one core either way");
        assert_eq!(Verdict::scoped(Outcome::Missed, "on 2 of 13").markdown(), "**missed** on 2 of 13");
    }

    #[test]
    fn a_claims_verdicts_come_before_its_remarks() {
        let text = markdown(
            &[Verdict::scoped(Outcome::Confirmed, "for throughput"), Verdict::scoped(Outcome::NotSeen, "for idle")],
            &["async 1.4× threads".into()],
        );
        assert_eq!(text, "**Confirmed** for throughput; **Not seen** for idle; async 1.4× threads");
        assert_eq!(markdown(&[], &[]), "");
    }
}
