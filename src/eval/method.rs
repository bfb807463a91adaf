//! The methods `chameleon eval` compares ([`Method`]), and who lends a profile to whom in the
//! `other-user` controls ([`donors`]).

use serde::Serialize;

/// A way of answering a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The selected history in the prompt; no insight, no edit (the paper's baseline).
    Instruct,
    /// LaMP's retrieval-augmented prompt: BM25-retrieved profile items in LaMP's per-task format.
    HistoryPrompt,
    /// The selected history and the personal insight in the prompt (how memory layers work).
    InsightPrompt,
    /// The user's own profile, fitted offline (from history only).
    Chameleon,
    /// A profile fitted with the user's questions added as queries (the paper's setting).
    ChameleonOnline,
    /// One profile fitted on a group of train-split users, applied to users it never saw.
    ChameleonGroup,
    /// Ablation: the user's profile with the personal direction only (beta = 0).
    POnly,
    /// Ablation: the user's profile with the generic direction only (alpha = 0).
    NOnly,
    /// Control: each user with a profile answered through another user's profile (the next user with
    /// one, in the split's order); the others as `instruct`. How much of `chameleon`'s effect is the
    /// user's own.
    OtherUser,
    /// Control: the user's own profile at a strength of 1e-5 (alpha and beta; `steer::NULL_STRENGTH`).
    /// It steers nothing, but a quantised model's logits jump when a few f32s change, so the answers
    /// it changes are what rounding alone changes: the noise band of the edited methods' `changed`.
    NullEdit,
    /// The user's own direction from their real answers (`fit --route align`), added at its layers.
    Align,
    /// Control for `align`: each aligned user answered through the next aligned user's direction.
    AlignOtherUser,
    /// The user's `words` way alone: `instruct`'s prompt, a logit bias toward the tokens their real
    /// answers use and the model's own do not, at `--words-strength` (with `--prior-strength`, the
    /// prior of the user's own answers added).
    Words,
    /// Control for `words`: each user answered with the next aligned user's bias (and prior).
    WordsOtherUser,
    /// The user's `labels` way alone (labels and ratings): `instruct`'s prompt, and the answer the one
    /// of the user's own history answers that the model finds likeliest, plus `--prior-strength`
    /// times the log of how often the user gave it (`labels@P`; nothing generated).
    Labels,
    /// Control for `labels`: each user answered with `labels@P` among the next user's answers and
    /// counts (every user lends, in the split's order). How much of `labels`' effect is the user's own.
    LabelsOtherUser,
    /// Each user answered the way their own policy says (`fit --route auto`): chosen on their newest
    /// history items held out, among no personalisation, the insight or retrieved history in the
    /// prompt, the real-answer direction at a few strengths, prompt and direction, the user's words
    /// and the prior of their own answers.
    Auto,
    /// Floor: the answer the user's profile gives without any model: their most frequent tag, their
    /// median score, the input itself.
    NoModel,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 18] = [
        Method::Instruct,
        Method::HistoryPrompt,
        Method::InsightPrompt,
        Method::Chameleon,
        Method::ChameleonOnline,
        Method::ChameleonGroup,
        Method::POnly,
        Method::NOnly,
        Method::OtherUser,
        Method::NullEdit,
        Method::Align,
        Method::AlignOtherUser,
        Method::Words,
        Method::WordsOtherUser,
        Method::Labels,
        Method::LabelsOtherUser,
        Method::Auto,
        Method::NoModel,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Instruct => "instruct",
            Method::HistoryPrompt => "history-prompt",
            Method::InsightPrompt => "insight-prompt",
            Method::Chameleon => "chameleon",
            Method::ChameleonOnline => "chameleon-online",
            Method::ChameleonGroup => "chameleon-group",
            Method::POnly => "p-only",
            Method::NOnly => "n-only",
            Method::OtherUser => "other-user",
            Method::NullEdit => "null-edit",
            Method::Align => "align",
            Method::AlignOtherUser => "align-other-user",
            Method::Words => "words",
            Method::WordsOtherUser => "words-other-user",
            Method::Labels => "labels",
            Method::LabelsOtherUser => "labels-other-user",
            Method::Auto => "auto",
            Method::NoModel => "no-model",
        }
    }

    /// Whether the method edits the model (and so needs a profile).
    pub(super) fn edits(self) -> bool {
        !matches!(
            self,
            Method::Instruct
                | Method::HistoryPrompt
                | Method::InsightPrompt
                | Method::NoModel
                | Method::Labels
                | Method::LabelsOtherUser
                | Method::Auto
        )
    }

    pub(super) fn uses_user_profile(self) -> bool {
        matches!(
            self,
            Method::Chameleon
                | Method::POnly
                | Method::NOnly
                | Method::OtherUser
                | Method::NullEdit
        )
    }

    pub(super) fn uses_align_profile(self) -> bool {
        matches!(
            self,
            Method::Align
                | Method::AlignOtherUser
                | Method::Words
                | Method::WordsOtherUser
                | Method::Auto
        )
    }
}

/// The default strength of the `words` and `words-other-user` methods (`eval --words-strength`):
/// the strength chosen for the `words` way on the train split.
pub const WORDS_STRENGTH: f32 = crate::personalize::policy::WORDS_STRENGTH;

/// Whose profile answers each user under [`Method::OtherUser`] (indices into `profiled`, the users in
/// the split's order, true where the user has a profile): the next user with a profile, wrapping
/// around, so every profile is lent exactly once; `None` for a user without a profile of their own,
/// and for everyone when fewer than two users have one.
pub(super) fn donors(profiled: &[bool]) -> Vec<Option<usize>> {
    let with: Vec<usize> = (0..profiled.len()).filter(|&i| profiled[i]).collect();
    let mut out = vec![None; profiled.len()];
    if with.len() >= 2 {
        for (j, &i) in with.iter().enumerate() {
            out[i] = Some(with[(j + 1) % with.len()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_is_lent_to_the_next_user_with_one() {
        assert_eq!(
            donors(&[true, false, true, true]),
            [Some(2), None, Some(3), Some(0)]
        );
        assert_eq!(donors(&[false, true, true]), [None, Some(2), Some(1)]);
        // one profile has no one to be lent to, and no one to borrow from
        assert_eq!(donors(&[false, true, false]), [None, None, None]);
        assert_eq!(donors(&[]), []);
        // nobody answers through their own profile, and every profile is lent once
        let d = donors(&[true; 5]);
        assert!(d.iter().enumerate().all(|(i, x)| *x != Some(i)));
        let mut lent: Vec<usize> = d.iter().flatten().copied().collect();
        lent.sort_unstable();
        assert_eq!(lent, [0, 1, 2, 3, 4]);
    }
}
