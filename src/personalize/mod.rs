//! The CHAMELEON pipeline: select -> insight -> pairs -> capture -> fit -> profile ([`pipeline`]), and
//! beside it the route from the user's real answers ([`align`]).
pub mod align;
pub mod fit;
pub mod pipeline;
pub mod policy;
pub mod prompts;
pub mod select;

pub use fit::PersonalDirection;
pub use pipeline::{
    DEFAULT_GAMMA, FIT_VERSION, FitParams, FitReport, LayerChoice, Material, Mode, PairAnswers,
    PersonalizeError, Personalizer, Pooling, Route, Strengths, TokenCounts, profile_plan,
    profile_policy, profile_route, profile_way, user_prompt,
};
pub use policy::{Policy, PolicyParams, Way, default_policy_params};
