//! The CHAMELEON pipeline: select -> insight -> pairs -> capture -> fit -> profile ([`pipeline`]), and
//! beside it the route from the user's real answers ([`align`]) and each user's way of answering,
//! chosen on their own held-out history ([`policy`]). [`params`] holds every choice of a fit,
//! [`apply`] how a stored profile is applied.
pub mod align;
pub mod apply;
pub mod fit;
pub mod labels;
pub mod params;
pub mod pipeline;
pub mod policy;
pub mod prompts;
pub mod select;

pub use apply::{
    PromptPart, Strengths, profile_plan, profile_policy, profile_route, profile_way, profile_words,
    prompt_part_for, stored_profile, with_prior,
};
pub use fit::PersonalDirection;
pub use params::{DEFAULT_GAMMA, FitParams, LayerChoice, Mode, PairAnswers, Pooling, Route};
pub use pipeline::{
    FIT_VERSION, FitReport, Material, PersonalizeError, Personalizer, ProgressSlot, TokenCounts,
    user_prompt,
};
pub use policy::{Policy, PolicyParams, Way, default_policy_params};
